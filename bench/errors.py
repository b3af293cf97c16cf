"""The one error the benchmark raises: it names what failed."""


class BenchError(RuntimeError):
    """A server did not start, answered something other than 200, or a step timed out."""
