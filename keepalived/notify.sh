#!/bin/sh
# keepalived notify script: called as `notify.sh GROUP|INSTANCE NAME STATE PRIORITY`.
# Also usable as tandem's own `ha.notify.*` hook, which calls it as `notify.sh ROLE`.
# Logs the new state to syslog; put cloud floating-IP calls or paging here.
if [ "$#" -ge 3 ]; then
  STATE="$3"   # keepalived: MASTER | BACKUP | FAULT | STOP
else
  STATE="$1"   # tandem: master | backup | fault
fi
logger -t tandem-ha "state -> $STATE" 2>/dev/null || echo "tandem-ha: state -> $STATE"
exit 0
