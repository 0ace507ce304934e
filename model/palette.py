"""The one palette of every figure: Okabe and Ito's eight colours, safe for the common
forms of colour blindness (Okabe & Ito, "Color Universal Design", 2008), and what
each stands for.  Besides these, figures use only black, white and greys
(``"0.35"``, ...).  ``tests/test_palette.py`` checks that no other colour is written
in the package.
"""

from __future__ import annotations

#: Okabe and Ito's palette.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}

#: The two class sizes (blue and orange: apart in every form of colour blindness).
CLASS_SIZES = {"SMALL": OKABE_ITO["blue"], "LARGE": OKABE_ITO["orange"]}
#: STAR's three class types: a small class, a regular one and a regular one with an aide.
CLASS_TYPES = {"small": CLASS_SIZES["SMALL"], "regular": CLASS_SIZES["LARGE"],
               "regular + aide": OKABE_ITO["reddish purple"]}
#: The analyses.
ANALYSES = {"structural": OKABE_ITO["bluish green"], "randomized": OKABE_ITO["blue"],
            "naive": OKABE_ITO["vermillion"]}
#: The cohorts.
COHORTS = {"REGULAR": OKABE_ITO["reddish purple"], "EXPERIMENTAL": OKABE_ITO["sky blue"]}
#: What a figure shows as its main series (ranks, a posterior, a fit that passes) ...
MAIN = OKABE_ITO["blue"]
#: ... and what it marks as a miss or an intervention (a truth outside, a cut arrow).
ALERT = OKABE_ITO["vermillion"]
#: A light fill for observed nodes and bands drawn in colour.
LIGHT = OKABE_ITO["sky blue"]
