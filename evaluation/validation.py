"""Collecting what is wrong with a submission, and turning it into one line a participant reads.

Every problem is recorded (the full report), each either fatal or a warning. Fatal problems
end the evaluation with a ValidationError whose message is a single line: grand-challenge
shows participants exactly the last line of stderr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from palm_algos.errors import PalmError
from palm_algos.formats import name_problem


class ValidationError(PalmError):
    """A submission that cannot be scored; ``problems`` holds the whole report. Exit status 1."""

    exit_code = 1

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [message])


def invalid(message: str) -> ValidationError:
    """A single fatal problem of the participant's, as the one line they read."""
    return ValidationError(f"Invalid submission: {' '.join(message.split())}")


class SetupError(PalmError):
    """The evaluation cannot run for a reason on the organiser's side (exit status 2)."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(" ".join(message.split()))
        self.problems = list(problems or [])


class GroundTruthError(SetupError):
    """Ground truth that is missing, unreadable or lacks what the submission answers."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(f"Ground truth problem (organiser's side): {message}", problems)


@dataclass
class Report:
    """Problems found so far: fatal ones stop scoring, warnings go into metrics.json."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truth: list[str] = field(default_factory=list)  # the ground truth's problems: for the organiser's log

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def note_truth(self, message: str) -> None:
        self.truth.append(message)

    def lines(self) -> list[str]:
        return ([f"ground truth: {m}" for m in self.truth] + [f"error: {m}" for m in self.errors]
                + [f"warning: {m}" for m in self.warnings])

    def raise_if_fatal(self) -> None:
        """Raise with a one-line summary naming the first problem and how many more there are."""
        if not self.errors:
            return
        more = len(self.errors) - 1
        tail = f" (and {more} more problem{'s' * (more > 1)}; see the log)" if more else ""
        first = " ".join(self.errors[0].split())  # never more than one line
        raise ValidationError(f"Invalid submission: {first}{tail}", self.lines())


def bare_name(name: str) -> str | None:
    """The stem of a file name, or None when ``formats.name_problem`` refuses it (a path such as
    ``../x.jpg`` or ``a\\b.jpg``, spaces around it): the rule prediction writes names by."""
    if name_problem(name):
        return None
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def short_list(names, limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
