"""Errata ingestion: CVE JSON 5 (with the kernel CNA sidecars), OSV and Debian tracker data."""
