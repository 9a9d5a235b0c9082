#!/bin/sh
# demo: a script someone left on the boot flash
/share/Public/.hidden/run.sh &
