"""The one exception type the CLI turns into a single line and exit code 2."""


class PrunekitError(Exception):
    """Bad input or an unmet precondition, phrased for the user."""
