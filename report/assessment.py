"""What a result means for the reader: confidence in plain words, risk level and recommendation.

The thresholds and the wording live here only, so the report, and any other view that quotes them,
say the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

from model.classes import LesionClass

# A result is called low-confidence when either test fails. Probabilities are temperature-calibrated.
LOW_CONFIDENCE_TOP = 0.60     # top-class probability below this
LOW_CONFIDENCE_MARGIN = 0.20  # or top minus second probability below this

CONFIDENCE_RULE = (f"Confidence is called low when the top probability is below "
                   f"{LOW_CONFIDENCE_TOP:.0%} or leads the second class by less than "
                   f"{LOW_CONFIDENCE_MARGIN * 100:.0f} percentage points.")

RISK_LABELS = {"high": "High", "medium": "Medium", "low": "Low", "unknown": "Unknown"}

# Per risk level: (headline, detail). Low risk never reads as "benign, no action".
RECOMMENDATIONS = {
    "high": ("Prompt in-person evaluation by a dermatologist is recommended.",
             "The image resembles a class that includes skin cancer; do not wait for the lesion to change."),
    "medium": ("Review by a dermatologist is recommended.",
               "Lesions of this kind are often treatable but need a clinician's examination and, where "
               "indicated, a biopsy to diagnose."),
    "low": ("Routine monitoring is suggested; this result does not exclude skin cancer.",
            "See a clinician promptly if the lesion changes in size, shape or colour, bleeds, itches or does "
            "not heal, or if it worries the patient."),
    "unknown": ("Review by a clinician is recommended.",
                "The predicted label is not described by this software's class table."),
}
LOW_CONFIDENCE_ADVICE = ("Because the model's confidence is low, review by a clinician is recommended "
                         "regardless of the predicted class.")
IN_PERSON = ("Any lesion that worries the patient or a clinician should be examined in person, whatever this "
             "analysis shows.")


@dataclass(frozen=True)
class Recommendation:
    headline: str
    detail: str
    caveat: str  # the low-confidence advice, or ""


@dataclass(frozen=True)
class Confidence:
    low: bool
    top: float
    margin: float  # top minus second probability
    statement: str


def assess_confidence(ranked: list[tuple[LesionClass, float]]) -> Confidence:
    """Plain-language confidence of a ranked result (most probable first)."""
    (first, top), second = ranked[0], (ranked[1] if len(ranked) > 1 else (None, 0.0))
    margin = top - second[1]
    low = top < LOW_CONFIDENCE_TOP or margin < LOW_CONFIDENCE_MARGIN
    runner_up = f"{second[0].name} ({second[1]:.1%})" if second[0] else "none"
    if low:
        statement = (f"Low confidence: the top probability is {top:.1%} and leads the second class, "
                     f"{runner_up}, by {margin * 100:.1f} percentage points. Treat this result as uncertain.")
    else:
        statement = (f"Higher confidence: the top probability is {top:.1%} and leads the second class, "
                     f"{runner_up}, by {margin * 100:.1f} percentage points. This is the model's "
                     f"estimate, not a certainty.")
    return Confidence(low, top, margin, statement)


def recommendation(severity: str, low_confidence: bool) -> Recommendation:
    """The advice for a risk level, with the low-confidence caveat when it applies."""
    headline, detail = RECOMMENDATIONS.get(severity, RECOMMENDATIONS["unknown"])
    return Recommendation(headline, detail, LOW_CONFIDENCE_ADVICE if low_confidence else "")
