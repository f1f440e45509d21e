"""livegraft's on-host client: finds the livepatch installed for the running kernel build,
checks it, loads it and records what happened.

Standard library only, so it runs on the distribution's own ``/usr/bin/python3`` (3.9 and
later) with no venv; it never imports the pipeline. The dnf plugin and the apt hook are
thin layers over it, as is ``livegraftctl``.
"""
