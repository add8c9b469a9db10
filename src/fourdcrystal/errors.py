"""User-facing errors: one line that names the problem and the fix."""


class UserError(Exception):
    """Bad input from a user. The CLI and Snakemake scripts print ``str(err)`` as one line and exit 2."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} — fix: {fix}")


def print_error(err: UserError) -> None:
    """The one-line message every entry point (CLI, Snakemake scripts, training) prints to stderr."""
    import sys

    print(f"fourdcrystal: error: {err}", file=sys.stderr)
