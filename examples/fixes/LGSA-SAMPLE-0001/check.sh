# Runs in the booted guest (busybox sh) after the module is loaded.
grep -q 'livepatched by livegraft (LGSA-SAMPLE-0001)' /proc/cmdline
