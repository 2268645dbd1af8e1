"""Errors raised by the quantification code."""


class QuantificationError(Exception):
    """A study that cannot be quantified.

    ``str(error)`` is one reason a person can act on, for example
    ``"PatientWeight (0010,1030) missing: SUVbw needs the patient's weight"``.
    It travels to the JSON output, the status page and the log unchanged.
    """
