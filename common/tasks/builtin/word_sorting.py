"""word_sorting (BBH): "Sort the following words alphabetically: List: oven costume counterpart" ->
"costume counterpart oven".

The generator samples distinct words from a built-in list (many share prefixes, so the order is not
trivial); the verifier reads the words after "List:" and compares the answer with their sorted order.
"""

from __future__ import annotations

import random
import re

from common.tasks.answers import normalize_answer
from common.tasks.base import Example

NAME = "word_sorting"
DESCRIPTION = "Sort a list of words."
ANSWER_KIND = "text"

WORDS = sorted(
    set(
        """
    abbey absent absorb abstract academy accent accept access accord account acid acorn acre across
    active actor adapt admiral adobe advent aerial affair agenda agile album alcove alder alert algae
    alibi alley almanac alpine amber ambush amulet anchor angle ankle annex antler anvil apex apron
    arbor arcade archer arctic armada armor aroma arrow artery aspen asset atlas atom attic auburn
    badge bagel ballad bamboo banner barley barn baron barrel basin basket beacon beaver bellow bench
    berry billow biscuit bison blanket blossom bonnet border boulder bracket breeze bridge brisk
    bronze bucket buffalo bundle burrow butter cabin cable cactus camel canal candle canopy canyon
    carbon cargo carpet carrot castle cavern cedar cellar census chalk chamber channel chapel charcoal
    cherry chimney cider cinder circus citadel civic clover cobalt cobble comet compass concert
    condor copper coral cordial corner costume cottage cotton counter counterpart country courage
    crater crimson crystal current cushion cypress dagger dairy damask dancer dawn debate decade
    decoy delta denim desert dial diamond diesel dolphin domain donkey dragon drizzle dune eagle
    easel eclipse effort elbow ember emblem empire engine envoy epoch equator errand essay estate
    fabric falcon fathom feather fender ferry fiber fiddle figure filament fjord flannel flask
    fleet flint forest fossil fountain fragment frost furnace gadget galaxy garden garlic garnet
    gazelle geyser ginger glacier glimmer goblet gondola gospel granite gravel grotto guitar gypsum
    habit hammock harbor harness harvest hazel helmet heron hinge hollow horizon hornet husk igloo
    image impulse indigo inlet insect island ivory jacket jargon jasmine jester jigsaw journal jungle
    juniper kernel kettle kiosk kitten ladder lagoon lantern larch lattice lava ledger legend lemon
    lentil lever lichen linen lizard lobster locket lumber lyric magnet mallet mango mantle maple
    marble market marsh meadow medal melon mercury meteor midnight mineral mirror mitten mosaic
    muffin mural musket mystic napkin nectar needle nickel nomad novel nugget oasis oatmeal oboe
    ocean olive onion opal orbit orchard orchid ostrich otter oven oyster paddle palace panther
    parade parcel parsley pebble pelican pepper pilgrim pillar pinnacle pistol planet plaza plume
    pocket pollen pony portal potato prairie prism pulley puzzle quarry quartz quill quiver rafter
    ranch raven reef ribbon riddle ripple river rocket saddle saffron salmon sandal satin scarlet
    scepter scroll sentry shadow shelter sierra silver sketch sleigh slipper socket sonnet sparrow
    spindle spruce squirrel staple statue summit swallow symbol tablet talon tangle tapestry tavern
    temple thimble thistle thunder timber tobacco topaz torch tower trellis tribute trumpet tulip
    tundra tunnel turbine turtle tweed umbrella umpire valley velvet venture vessel village violet
    voyage waffle walnut walrus wander warden wedge whisker willow window winter wizard yarrow yeoman
    zenith zephyr zinc
    """.split()
    )
)
"""Lowercase English words the questions are drawn from."""

# ---------------------------------------------------------------- generator


def generate(rng: random.Random) -> Example:
    """One question with 3-12 distinct words, often several sharing a first letter."""
    n = rng.randint(3, 12)
    if rng.random() < 0.5:  # cluster around one letter so the second and third letters matter
        letter = rng.choice(WORDS)[0]
        near = [w for w in WORDS if w[0] == letter]
        chosen = rng.sample(near, min(len(near), n, rng.randint(2, 4)))
        chosen += rng.sample([w for w in WORDS if w not in chosen], n - len(chosen))
        rng.shuffle(chosen)
    else:
        chosen = rng.sample(WORDS, n)
    question = "Sort the following words alphabetically: List: " + " ".join(chosen)
    return Example(input=question, target=" ".join(sorted(chosen)))


# ---------------------------------------------------------------- verifier

_LIST = re.compile(r"\blist\s*:(.*)$", re.IGNORECASE | re.DOTALL)
_HEADER = re.compile(r"\balphabetically\s*:(.*)$", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"^[^\W\d_]+(?:['-][^\W\d_]+)*$")


def words_in(question: str) -> list[str] | None:
    """The words after "List:" (or after "alphabetically:"), or None if there are none or any token
    is not a word."""
    m = _LIST.search(question) or _HEADER.search(question)
    if not m:
        return None
    words = m.group(1).split()
    if not words or not all(_WORD.match(w) for w in words):
        return None
    return words


def verify(question: str, answer: str) -> bool | None:
    """True if `answer` lists the question's words in alphabetical order, space-separated (case is
    ignored); None if the question has no readable word list."""
    words = words_in(question)
    if words is None:
        return None
    expected = " ".join(sorted(w.casefold() for w in words))
    return normalize_answer(answer, "text") == expected


def solve(question: str) -> str | None:
    """The question's words in alphabetical order, or None if it has no readable word list."""
    words = words_in(question)
    return None if words is None else " ".join(sorted(w.casefold() for w in words))


def explain(question: str) -> str | None:
    """Step-by-step reasoning: each word's first letter, then the words in alphabetical order."""
    answer = solve(question)
    if answer is None:
        return None
    firsts = ", ".join(f'"{w}" starts with "{w[0]}"' for w in words_in(question) or [])
    return f"{firsts}. So, in alphabetical order, the answer is {answer}. <ans>{answer}</ans>"
