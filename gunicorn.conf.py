"""gunicorn's settings, read from the working directory by every `gunicorn`
started there (the image, docker-compose.yml, make run-web); the command line
adds to them.

The access log records the path without its query string: a client that puts a
token or a password in the URL (``?token=...``) must not have it written to the
logs (tests/test_security.py). Otherwise gunicorn's default format."""

access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
