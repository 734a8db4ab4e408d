"""schemathesis against the live API, as `make fuzz` runs it, with fewer examples.

Every operation of /api/v1/schema/, positive and negative cases (coverage phase), random
fuzzing and the stateful phase, as a staff user who may call everything: any 5xx, any
status code, content type or body the schema does not describe fails the test.
"""

import os
import subprocess

import pytest
from django.contrib.auth.models import Group

from bench.fuzz import schemathesis_command

from .conftest import ROOT, token_for

MAX_EXAMPLES = int(os.environ.get("MODELGATE_FUZZ_EXAMPLES", 15))


@pytest.mark.live
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_or_schema_mismatch(stack, admin_user):
    for name in ("contributors", "reviewers"):
        admin_user.groups.add(Group.objects.get_or_create(name=name)[0])
    redis = stack.redis()
    web = stack.web(redis.url)
    cmd = schemathesis_command(web.url, token_for(admin_user), MAX_EXAMPLES, [])
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    # It really exercised the API: every selected operation was tested.
    assert "Tested: " in result.stdout, report
    assert "No issues found" in result.stdout or "passed" in result.stdout, report
