"""The seven HAM10000 diagnostic classes: the one table every part of the project reads."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    code: str
    name: str
    severity: str  # "high" | "medium" | "low": how urgently a lesion of this kind needs a clinician
    description: str


CLASSES: tuple[LesionClass, ...] = (
    LesionClass("mel", "Melanoma", "high",
                "Malignant tumour of melanocytes; the most dangerous skin cancer when found late."),
    LesionClass("akiec", "Actinic keratoses / intraepithelial carcinoma", "medium",
                "Sun-damage lesions and Bowen's disease; pre-malignant or early squamous cell carcinoma."),
    LesionClass("bcc", "Basal cell carcinoma", "medium",
                "The most common skin cancer; grows slowly and rarely spreads, but destroys tissue locally."),
    LesionClass("vasc", "Vascular lesions", "low",
                "Cherry angiomas, angiokeratomas, pyogenic granulomas and haemorrhage."),
    LesionClass("df", "Dermatofibroma", "low",
                "A common benign fibrous nodule of the skin."),
    LesionClass("bkl", "Benign keratosis-like lesions", "low",
                "Seborrhoeic keratoses, solar lentigines and lichen-planus-like keratoses."),
    LesionClass("nv", "Melanocytic nevi", "low",
                "Common moles: benign proliferations of melanocytes."),
)

BY_CODE: dict[str, LesionClass] = {c.code: c for c in CLASSES}
CODES: tuple[str, ...] = tuple(BY_CODE)
SEVERITIES: tuple[str, ...] = ("high", "medium", "low")


def lesion_class(code: str) -> LesionClass:
    """The class with this HAM10000 code; a label outside the table is described as unknown, not dropped."""
    try:
        return BY_CODE[code]
    except KeyError:
        return LesionClass(code, code, "unknown", "A label this app's class table does not describe.")
