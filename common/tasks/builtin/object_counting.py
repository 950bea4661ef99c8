"""object_counting (BBH): "I have a flute, two pianos, a carrot, and a violin. How many musical
instruments do I have?" -> "4".

The generator draws items from a category lexicon (BBH's categories) with counts written as words;
the verifier splits the item list, reads each quantity (a/an/one/digits/number words) and looks each
noun up in the same lexicon. An item it does not know makes the question unverifiable (None).
"""

from __future__ import annotations

import random
import re

from common.tasks.answers import normalize_answer, words_to_int
from common.tasks.base import Example

NAME = "object_counting"
DESCRIPTION = "Questions that involve enumerating objects and asking the model to count them."
ANSWER_KIND = "number"


def _nouns(spec: str) -> list[tuple[str, str]]:
    """'piano, peach:peaches' -> [('piano', 'pianos'), ('peach', 'peaches')]; plural defaults to +s."""
    out = []
    for item in spec.split(","):
        singular, _, plural = item.strip().partition(":")
        out.append((singular, plural or singular + "s"))
    return out


LEXICON: dict[str, list[tuple[str, str]]] = {
    "musical instruments": _nouns("piano, flute, trombone, violin, accordion, clarinet, drum, trumpet"),
    "fruits": _nouns(
        "apple, banana, blackberry:blackberries, grape, nectarine, orange, peach:peaches, plum, "
        "raspberry:raspberries, strawberry:strawberries"
    ),
    "vegetables": _nouns(
        "cabbage, carrot, cauliflower, garlic:garlics, head of broccoli:heads of broccoli, "
        "lettuce head, onion, potato:potatoes, stalk of celery:stalks of celery, yam"
    ),
    "animals": _nouns(
        "bear, cat, chicken, cow, dog, donkey, duck, fish:fish, frog, goat, mouse:mice, pig, "
        "rabbit, snail, snake"
    ),
    "objects": _nouns("bed, car, chair, couch:couches, fridge, lamp, microwave, oven, stove, table, toaster"),
}
"""Category (as asked in the question) -> (singular, plural) nouns the generator draws from."""

KNOWN: dict[str, list[tuple[str, str]]] = {
    "musical instruments": _nouns(
        "banjo, cello, guitar, harp, harmonica, saxophone, tuba, ukulele, xylophone"
    ),
    "fruits": _nouns(
        "cherry:cherries, kiwi, lemon, lime, mango:mangoes, melon, pear, pineapple, watermelon, apricot"
    ),
    "vegetables": _nouns(
        "cucumber, eggplant, leek, pepper, pumpkin, radish:radishes, tomato:tomatoes, zucchini"
    ),
    "animals": _nouns(
        "bee, bird, butterfly:butterflies, camel, deer:deer, elephant, fox:foxes, goose:geese, horse, lamb, "
        "lion, monkey, owl, sheep:sheep, tiger, turkey, wolf:wolves, zebra, ant, bat, crab, crow, dolphin, "
        "eagle, giraffe, gorilla, hamster, hen, kangaroo, koala, leopard, octopus:octopuses, ox:oxen, "
        "panda, parrot, peacock, penguin, pigeon, puppy:puppies, kitten, rat, shark, spider, squirrel, "
        "swan, turtle, whale, worm"
    ),
    "objects": _nouns("bookshelf:bookshelves, clock, desk, dishwasher, sofa, television, washing machine"),
}
"""More nouns the verifier knows (never generated): teachers name them in the questions they write."""

OTHER = _nouns(
    "ball, balloon, bag, beehive, book, bottle, box, bread, cake, candle, coffee, coin, cookie, cup, "
    "fire, flower, hat, house, key, pen, pencil, phone, rock, shoe, tree"
)
"""Things in none of the categories but objects: they count as 0 animals, fruits, vegetables or
instruments, and make a "how many objects" question unreadable (whether a tree is an object is the
question's ambiguity, not the teacher's error). Teachers' drafts name them (docs/measurements.md)."""

_CATEGORY_ALIASES = {
    "musical instruments": "musical instruments",
    "instruments": "musical instruments",
    "fruits": "fruits",
    "fruit": "fruits",
    "vegetables": "vegetables",
    "animals": "animals",
    "objects": "objects",
}
_NOUN_CATEGORY = {
    form: cat
    for lexicon in (LEXICON, KNOWN, {"other": OTHER})
    for cat, nouns in lexicon.items()
    for pair in nouns
    for form in pair
}
_COUNT_WORDS = ["one", "two", "three", "four", "five"]

# ---------------------------------------------------------------- generator


def _phrase(count: int, singular: str, plural: str) -> str:
    if count == 1:
        return ("an " if singular[0] in "aeiou" else "a ") + singular
    return f"{_COUNT_WORDS[count - 1]} {plural}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]} and {parts[1]}"
    return ", ".join(parts[:-1]) + ", and " + parts[-1]


def generate(rng: random.Random) -> Example:
    """One question: 1-4 kinds of the asked category plus 0-4 distractors from other categories
    ("objects" questions list only objects, so what counts is never ambiguous)."""
    category = rng.choice(sorted(LEXICON))
    wanted = rng.sample(LEXICON[category], rng.randint(1, 4))
    others = [] if category == "objects" else [n for c, ns in LEXICON.items() if c != category for n in ns]
    distractors = rng.sample(others, min(len(others), rng.randint(0, 4)))
    items = [(noun, rng.choice((1, 1, 1, 2, 3, 4, 5)), noun in wanted) for noun in wanted + distractors]
    rng.shuffle(items)
    text = _join([_phrase(count, *noun) for noun, count, _ in items])
    total = sum(count for _, count, counted in items if counted)
    return Example(input=f"I have {text}. How many {category} do I have?", target=str(total))


# ---------------------------------------------------------------- verifier

_QUESTION = re.compile(
    r"\bI have (.+?)\.\s*How many ([a-z ]+?) do I have\s*\??\s*$", re.IGNORECASE | re.DOTALL
)
_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")


def _quantity(word: str) -> int | None:
    word = word.casefold()
    if word in ("a", "an"):
        return 1
    if word.isdigit():
        return int(word)
    value = words_to_int(word)
    return value if value is not None and value > 0 else None


def counted_items(question: str) -> tuple[str, list[tuple[str, int]]] | None:
    """The asked category and the (item as written, quantity) pairs that belong to it, or None if
    the question cannot be read."""
    m = _QUESTION.search(" ".join(question.split()))
    if not m:
        return None
    category = _CATEGORY_ALIASES.get(m.group(2).casefold().strip())
    if category is None:
        return None
    counted = []
    for item in _SPLIT.split(m.group(1).strip()):
        quantity_word, _, noun = item.strip().partition(" ")
        quantity = _quantity(quantity_word)
        noun_category = _NOUN_CATEGORY.get(noun.casefold().strip())
        if quantity is None or noun_category is None:
            return None
        if category == "objects" and noun_category != "objects":
            return None  # "how many objects" over animals, fruit or a tree is ambiguous
        if noun_category == category:
            counted.append((item.strip(), quantity))
    return category, counted


def count_items(question: str) -> int | None:
    """How many things of the asked category the question lists, or None if it cannot be read."""
    found = counted_items(question)
    return None if found is None else sum(q for _, q in found[1])


def verify(question: str, answer: str) -> bool | None:
    """True if `answer` (digits or words) is the count; None if the question cannot be read."""
    total = count_items(question)
    if total is None:
        return None
    return normalize_answer(answer, "number") == str(total)


def solve(question: str) -> str | None:
    """The count asked for, in digits, or None if the question cannot be read."""
    total = count_items(question)
    return None if total is None else str(total)


def explain(question: str) -> str | None:
    """Step-by-step reasoning: the items of the asked category with their counts, then the sum.
    "I have a flute, two pianos, and a carrot. How many musical instruments do I have?" -> "The
    musical instruments are a flute (1) and two pianos (2). 1 + 2 = 3. So the answer is 3.
    <ans>3</ans>"."""
    found = counted_items(question)
    if found is None:
        return None
    category, items = found
    total = sum(q for _, q in items)
    if not items:
        steps = [f"None of the items are {category}."]
    else:
        steps = [f"The {category} are {_join([f'{item} ({q})' for item, q in items])}."]
        if len(items) > 1:
            steps.append(" + ".join(str(q) for _, q in items) + f" = {total}.")
    return " ".join(steps + [f"So the answer is {total}. <ans>{total}</ans>"])
