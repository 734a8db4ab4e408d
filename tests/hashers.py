"""The password hasher of the test process: Django's PBKDF2 at 1,000 rounds, not 1,000,000.

A user made here costs half a second of PBKDF2 otherwise, and most tests make several. The
hashes keep Django's `pbkdf2_sha256$<rounds>$…` form, so a live server (production settings)
still verifies them with its own hasher, which reads the rounds from the hash.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000
