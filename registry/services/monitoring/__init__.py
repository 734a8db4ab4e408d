"""Production monitoring: baselines and explanations of versions, the ingest of captured
predictions and feedback, and the retention of what was ingested.

- `baseline`: the schemas of a version's `baseline` and `explanations`, and their checks.
- `ingest`: ingest tokens' writes (prediction records and feedback), validated whole.
- `partitions` and `retention`: day partitions of the prediction table on Postgres.
"""
