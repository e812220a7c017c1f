#!/bin/sh
# keepalived vrrp_script: exit 0 while tandem is ready to serve, non-zero otherwise.
# /readyz is 200 when every listener is bound and every upstream has a healthy
# server (use /healthz instead to only check that the process serves).
# TANDEM_ADMIN overrides the admin address (default: tandem's default admin.bind).
# If admin.token_file is set this still works: GET endpoints need no token.
ADMIN="${TANDEM_ADMIN:-127.0.0.1:9901}"
exec curl -fsS -o /dev/null --max-time 1 "http://$ADMIN/readyz"
