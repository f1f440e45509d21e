"""Repository metadata: RPM repodata with updateinfo behind a metalink, and apt indexes."""
