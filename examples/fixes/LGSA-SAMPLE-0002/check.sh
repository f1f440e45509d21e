# Runs in the booted guest (busybox sh) after the module is loaded.
grep -q '\[livegraft LGSA-SAMPLE-0002\]$' /proc/version
