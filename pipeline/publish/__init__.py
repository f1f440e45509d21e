"""Publishing a repository tree to a folder or an S3 bucket without a torn state."""
