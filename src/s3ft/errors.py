"""One exception type for problems the user can fix; the CLI prints it as one line."""


class S3FTError(Exception):
    """Bad input or configuration. The message names the file, line or key at fault."""
