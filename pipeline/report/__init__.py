"""The coverage report: kernel builds × vulnerabilities, as a table, JSON or one HTML page."""
