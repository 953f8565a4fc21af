"""Dataset names across UCR archive versions, close-match hints, and the data layer's error type.

The study uses the 85 datasets of the UCR 2015 archive. Their 2015 folder names differ
from the 2018 names used by sktime and by published result tables (``Gun_Point`` is
``GunPoint``, ``50words`` is ``FiftyWords``, ...). The 2018 spelling is *canonical*:
run records and :attr:`DatasetSplits.name` use it, whichever folder was read.

This module imports nothing from the rest of :mod:`tsllm.data`, so the readers
(:mod:`~tsllm.data.formats`) and the dataset sets (:mod:`~tsllm.data.sets`) can both use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DataError(ValueError):
    """Bad or missing input data; the message names the file/line and what was expected."""


# The 85 datasets of the UCR 2015 archive, by their 2018 (canonical) names.
UCR2015_85: tuple[str, ...] = tuple(
    sorted(
        [
            "Adiac",
            "ArrowHead",
            "Beef",
            "BeetleFly",
            "BirdChicken",
            "CBF",
            "Car",
            "ChlorineConcentration",
            "CinCECGTorso",
            "Coffee",
            "Computers",
            "CricketX",
            "CricketY",
            "CricketZ",
            "DiatomSizeReduction",
            "DistalPhalanxOutlineAgeGroup",
            "DistalPhalanxOutlineCorrect",
            "DistalPhalanxTW",
            "ECG200",
            "ECG5000",
            "ECGFiveDays",
            "Earthquakes",
            "ElectricDevices",
            "FaceAll",
            "FaceFour",
            "FacesUCR",
            "FiftyWords",
            "Fish",
            "FordA",
            "FordB",
            "GunPoint",
            "Ham",
            "HandOutlines",
            "Haptics",
            "Herring",
            "InlineSkate",
            "InsectWingbeatSound",
            "ItalyPowerDemand",
            "LargeKitchenAppliances",
            "Lightning2",
            "Lightning7",
            "Mallat",
            "Meat",
            "MedicalImages",
            "MiddlePhalanxOutlineAgeGroup",
            "MiddlePhalanxOutlineCorrect",
            "MiddlePhalanxTW",
            "MoteStrain",
            "NonInvasiveFetalECGThorax1",
            "NonInvasiveFetalECGThorax2",
            "OSULeaf",
            "OliveOil",
            "PhalangesOutlinesCorrect",
            "Phoneme",
            "Plane",
            "ProximalPhalanxOutlineAgeGroup",
            "ProximalPhalanxOutlineCorrect",
            "ProximalPhalanxTW",
            "RefrigerationDevices",
            "ScreenType",
            "ShapeletSim",
            "ShapesAll",
            "SmallKitchenAppliances",
            "SonyAIBORobotSurface1",
            "SonyAIBORobotSurface2",
            "StarLightCurves",
            "Strawberry",
            "SwedishLeaf",
            "Symbols",
            "SyntheticControl",
            "ToeSegmentation1",
            "ToeSegmentation2",
            "Trace",
            "TwoLeadECG",
            "TwoPatterns",
            "UWaveGestureLibraryAll",
            "UWaveGestureLibraryX",
            "UWaveGestureLibraryY",
            "UWaveGestureLibraryZ",
            "Wafer",
            "Wine",
            "WordSynonyms",
            "Worms",
            "WormsTwoClass",
            "Yoga",
        ]
    )
)

# Canonical (2018) name -> UCR 2015 folder name, for every dataset whose spelling changed.
NAMES_2015: dict[str, str] = {
    "CinCECGTorso": "CinC_ECG_torso",
    "CricketX": "Cricket_X",
    "CricketY": "Cricket_Y",
    "CricketZ": "Cricket_Z",
    "FiftyWords": "50words",
    "Fish": "FISH",
    "GunPoint": "Gun_Point",
    "Lightning2": "Lighting2",
    "Lightning7": "Lighting7",
    "Mallat": "MALLAT",
    "NonInvasiveFetalECGThorax1": "NonInvasiveFatalECG_Thorax1",
    "NonInvasiveFetalECGThorax2": "NonInvasiveFatalECG_Thorax2",
    "SonyAIBORobotSurface1": "SonyAIBORobotSurface",
    "SonyAIBORobotSurface2": "SonyAIBORobotSurfaceII",
    "SyntheticControl": "synthetic_control",
    "TwoPatterns": "Two_Patterns",
    "UWaveGestureLibraryX": "uWaveGestureLibrary_X",
    "UWaveGestureLibraryY": "uWaveGestureLibrary_Y",
    "UWaveGestureLibraryZ": "uWaveGestureLibrary_Z",
    "Wafer": "wafer",
    "WordSynonyms": "WordsSynonyms",
    "Yoga": "yoga",
}
_CANONICAL: dict[str, str] = {old: new for new, old in NAMES_2015.items()}


def canonical_name(name: str) -> str:
    """The 2018 spelling of ``name`` (``"Gun_Point"`` -> ``"GunPoint"``); other names are returned as is."""
    return _CANONICAL.get(name, name)


def folder_candidates(name: str) -> tuple[str, ...]:
    """Folder names that may hold dataset ``name``: ``name`` itself first, then its other-archive spelling."""
    alias = NAMES_2015.get(name) or _CANONICAL.get(name)
    return (name,) if alias is None else (name, alias)


def closest_names(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` names of ``known`` closest to ``name``, best first, ignoring case (difflib ratio >= ``cutoff``)."""
    by_lower: dict[str, str] = {}
    for candidate in sorted(known):
        by_lower.setdefault(candidate.lower(), candidate)
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[match] for match in matches]
