"""Package, repository and kernel-module signing."""
