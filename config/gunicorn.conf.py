"""gunicorn settings shared by every launcher: `gunicorn -c config/gunicorn.conf.py config.wsgi`.

The Dockerfile, deploy/k8s, bench/server.py and tests/processes.py all start gunicorn
with this file, so what the benchmarks measure is what is deployed. Flags given on the
command line (--bind, --workers) override the values here.

Request bodies need no help from here: since gunicorn 24 a Content-Length body is read
with recv() calls of up to 1 MiB (gunicorn 23 read 8 KiB at a time, which held uploads to
~120 MiB/s and needed a body-reader patch). tests/test_upload_speed.py fails if that
ever changes.
"""

worker_class = "gthread"
threads = 4
timeout = 600  # a multi-GiB chunk on a slow link is one long request
