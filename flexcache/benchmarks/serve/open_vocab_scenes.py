"""What an open-vocabulary prompt says and how its user writes it (`open_vocab`).

A `Scene` holds a prompt's slots: subject, action, setting and modifiers
(camera, lighting, style, details, quality tags, sentences), its language and
its form (a few words, a casual request, a tag list, or prose). The
`SceneWriter` draws new scenes from the word lists (`open_vocab_words`,
`open_vocab_languages`; each list a Zipf law over its order), edits them one
slot at a time, and renders them with a user's habits (`Persona`): lowercase,
consistent typos, emoji. Every draw comes from the random stream it is
given, so a trace stays deterministic per seed.
"""

from __future__ import annotations

import bisect
import random
import re
import zlib
from dataclasses import dataclass
from typing import Any

from flexcache.benchmarks.serve import open_vocab_words as words
from flexcache.benchmarks.serve.open_vocab_languages import LANGUAGES


class Zipf:
    """Draws from a list in popularity order, rank r with weight 1 / r^exponent."""

    __slots__ = ("items", "cumulative")

    def __init__(self, items, exponent: float) -> None:
        self.items = tuple(items)
        self.cumulative, total = [], 0.0
        for rank in range(1, len(self.items) + 1):
            total += rank ** -exponent
            self.cumulative.append(total)

    def __call__(self, rng: random.Random, avoid: object = None) -> Any:
        for _ in range(4):  # a different item than `avoid` where the list has one
            item = self.items[bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]
            if item != avoid:
                return item
        return item


class Scene:
    """What a prompt says, slot by slot; edits change slots, rendering writes the text."""

    __slots__ = ("language", "kind", "subject", "action", "setting", "camera", "lighting", "style", "details",
                 "quality", "extras", "form", "wording", "template", "fill", "pasted")

    def __init__(self, **slots: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, slots.get(name, () if name in ("camera", "details", "quality", "extras") else None))

    def copy(self) -> Scene:
        return Scene(**{name: getattr(self, name) for name in self.__slots__})


@dataclass
class Persona:
    """A user's name, language and writing habits."""

    name: str
    language: str
    forms: tuple[float, float, float]  # cumulative weights of short, casual and tag-list prompts
    lowercase: bool
    typo_rate: float
    emoji_rate: float


KIND_WEIGHTS = {"animal": 30, "person": 28, "creature": 12, "scene": 8, "vehicle": 7, "food": 7, "product": 4,
                "group": 4}  # assumption: animals and people lead public prompt logs
# Small edits keep a prompt's scene and change how it is said or shot; big ones change what it shows.
MINOR_EDITS = ("wording", "add_quality", "drop_modifier", "add_detail", "camera", "lighting", "add_extra")
MAJOR_EDITS = ("style", "action", "setting", "subject")
MODIFIER_ORDERS = (("camera", "lighting", "style", "details", "quality", "extras"),
                   ("style", "camera", "lighting", "details", "quality", "extras"),
                   ("details", "lighting", "camera", "style", "extras", "quality"),
                   ("style", "lighting", "quality", "camera", "details", "extras"))
_WORD = re.compile(r"[A-Za-z]{5,}")  # words long enough to misspell


class SceneWriter:
    """Draws new scenes, edits them and writes them as text, from the caller's random stream."""

    def __init__(self, rng: random.Random, zipf_exponent: float) -> None:
        self.rng, zipf = rng, zipf_exponent
        self.english = {name: {kind: Zipf(items, zipf) for kind, items in table.items()}
                        for name, table in (("noun", words.NOUNS), ("adjective", words.ADJECTIVES),
                                            ("attribute", words.ATTRIBUTES), ("action", words.ACTIONS))}
        self.lists = {name: Zipf(getattr(words, name.upper()), zipf) for name in (
            "group_subjects", "surreal_actions", "materials", "places", "cities", "city_places", "times", "cameras",
            "styles", "lightings", "details", "quality_tags", "negatives", "sentences", "rare_templates")}
        self.foreign = {code: {slot: Zipf(getattr(vocabulary, slot), zipf) for slot in (
            "subjects", "actions", "settings", "cameras", "lightings", "styles", "quality")}
            for code, vocabulary in LANGUAGES.items()}
        self.kinds, self.kind_weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())

    def english_subject(self, kind: str) -> str:
        rng, english = self.rng, self.english
        if kind == "group":
            return self.lists["group_subjects"](rng)
        noun = english["noun"][kind](rng)
        if rng.random() < 0.45:
            noun = f"{english['adjective'][kind](rng)} {noun}"
        if rng.random() < 0.25:
            noun = f"{noun} {english['attribute'][kind](rng)}"
        return with_article(noun)

    def english_setting(self) -> str:
        rng, lists = self.rng, self.lists
        if rng.random() < 0.25:
            template = lists["city_places"](rng)
            setting, timeless = template.format(city=lists["cities"](rng)), template.endswith("{city}")
        else:
            place, timeless = lists["places"](rng), True
            setting = f"{'on' if place in words.PLACES_ON else 'in'} {place}"
        if timeless and rng.random() < 0.35:
            setting = f"{setting} {lists['times'](rng)}"
        return setting

    def english_scene(self, form: str, rich: bool = False) -> Scene:
        """A new English scene written as `form` ("short", "casual", "tags", "prose"); `rich`: more modifiers."""
        rng, lists = self.rng, self.lists
        kind = rng.choices(self.kinds, weights=self.kind_weights)[0]
        scene = Scene(language="en", kind=kind, subject=self.english_subject(kind),
                       action=self.english["action"][kind](rng), setting=self.english_setting(), form=form,
                       wording=rng.getrandbits(30))
        chance = {"short": 0.0, "casual": 0.25, "tags": 0.6, "prose": 0.5}[form] + (0.3 if rich else 0.0)
        if rng.random() < chance:
            scene.camera = (lists["cameras"](rng),)
        if rng.random() < chance:
            scene.lighting = lists["lightings"](rng)
        if rng.random() < chance + 0.15:
            scene.style = lists["styles"](rng)
        if form in ("tags", "prose") and rng.random() < chance:
            scene.details = tuple(dict.fromkeys(lists["details"](rng) for _ in range(rng.randint(1, 2))))
        if form != "short" and rng.random() < chance:
            scene.quality = tuple(dict.fromkeys(lists["quality_tags"](rng) for _ in range(rng.randint(1, 3))))
        if form == "prose":
            scene.extras = tuple(dict.fromkeys(lists["sentences"](rng) for _ in range(rng.randint(1, 3))))
        elif form == "tags" and rng.random() < 0.1:
            scene.extras = (lists["negatives"](rng),)
        return scene

    def rare_scene(self) -> Scene:
        """A one-off idea: a template with invented names, brands, materials or a surreal action."""
        rng, lists, english = self.rng, self.lists, self.english
        template = lists["rare_templates"](rng)
        pets = "my dog" in template or "my cat" in template
        kind = "animal" if pets else rng.choice(("animal", "person", "creature"))
        scene = self.english_scene(rng.choice(("casual", "tags")))
        nouns = [english["noun"][rng.choice(("animal", "person", "creature"))](rng) for _ in range(2)]
        scene.kind, scene.subject, scene.template = kind, self.english_subject(kind), template
        scene.action = (lists["surreal_actions"] if rng.random() < 0.5 else english["action"][kind])(rng)
        scene.fill = {"brand": random_brand(rng), "name": random_name(rng), "name2": random_name(rng),
                      "city": lists["cities"](rng), "material": lists["materials"](rng),
                      "noun": with_article(nouns[0]), "bare_noun": nouns[0], "noun2": with_article(nouns[1]),
                      "subject2": self.english_subject("person")}
        return scene

    def foreign_scene(self, code: str) -> Scene:
        """A new scene in language `code` (`open_vocab_languages.LANGUAGES`)."""
        rng, draw = self.rng, self.foreign[code]
        scene = Scene(language=code, kind="foreign", subject=draw["subjects"](rng), action=draw["actions"](rng),
                       setting=draw["settings"](rng), form="tags", wording=rng.getrandbits(30))
        if rng.random() < 0.4:
            scene.camera = (draw["cameras"](rng),)
        if rng.random() < 0.3:
            scene.lighting = draw["lightings"](rng)
        if rng.random() < 0.6:
            scene.style = draw["styles"](rng)
        if rng.random() < 0.4:
            scene.quality = (draw["quality"](rng),)
        return scene

    def edit(self, scene: Scene, major: bool) -> Scene:
        """One edit of `scene`: a big one (style, action, setting, subject) or a small one."""
        rng, lists, edited = self.rng, self.lists, scene.copy()
        edited.pasted = False  # an edited copy is typed by its user
        foreign = self.foreign.get(scene.language)
        operation = rng.choice(MAJOR_EDITS if major else MINOR_EDITS)
        if operation == "wording":
            edited.wording = rng.getrandbits(30)
        elif operation == "style":
            edited.style = (foreign["styles"] if foreign else lists["styles"])(rng, avoid=scene.style)
        elif operation == "action":
            edited.action = (foreign["actions"] if foreign else self.english["action"][scene.kind])(
                rng, avoid=scene.action)
        elif operation == "setting":
            edited.setting = foreign["settings"](rng, avoid=scene.setting) if foreign else self.english_setting()
        elif operation == "subject":
            edited.subject = foreign["subjects"](rng, avoid=scene.subject) if foreign else \
                self.english_subject(scene.kind)
        elif operation == "camera":
            edited.camera = ((foreign["cameras"] if foreign else lists["cameras"])(rng),)
        elif operation == "lighting":
            edited.lighting = (foreign["lightings"] if foreign else lists["lightings"])(rng, avoid=scene.lighting)
        elif operation == "drop_modifier" and (scene.camera or scene.lighting or scene.details or scene.quality):
            slot = rng.choice([name for name in ("camera", "lighting", "details", "quality") if getattr(scene, name)])
            setattr(edited, slot, None if slot == "lighting" else getattr(scene, slot)[:-1])
        elif operation == "add_detail" and not foreign:
            edited.details = tuple(dict.fromkeys((*scene.details, lists["details"](rng))))
        elif operation == "add_extra" and not foreign:
            extra = lists["sentences" if scene.form == "prose" else "negatives"](rng)
            edited.extras = tuple(dict.fromkeys((*scene.extras, extra)))
        else:  # add_quality, and what a scene has no room for
            tag = (foreign["quality"] if foreign else lists["quality_tags"])(rng)
            edited.quality = tuple(dict.fromkeys((*scene.quality, tag)))
        return edited

    # -- text

    def render(self, scene: Scene, persona: Persona | None) -> str:
        """The prompt text of `scene`, with `persona`'s habits unless it was pasted as is (None: none)."""
        text = self.render_foreign(scene) if scene.language != "en" else render_english(scene)
        if persona is None or scene.pasted:
            return text
        if persona.typo_rate and scene.language == "en":
            text = _WORD.sub(lambda m: misspell(m.group(0), persona), text)
        if persona.lowercase:
            text = text.lower().rstrip(".")
        if persona.emoji_rate and (scene.wording >> 13) % 100 < persona.emoji_rate * 100:
            text += " " + words.EMOJI[(scene.wording >> 20) % len(words.EMOJI)] * (1 + (scene.wording >> 25) % 2)
        return text

    def render_foreign(self, scene: Scene) -> str:
        vocabulary, w = LANGUAGES[scene.language], scene.wording
        core = vocabulary.space.join(getattr(scene, slot) for slot in vocabulary.order)
        modifiers = ordered_modifiers(scene)
        prefix = vocabulary.prefixes[(w >> 3) % len(vocabulary.prefixes)]
        return prefix + core + (vocabulary.join + vocabulary.join.join(modifiers) if modifiers else "")


def render_english(scene: Scene) -> str:
    w, subject, action, setting = scene.wording, scene.subject, scene.action, scene.setting
    if scene.template:
        core = scene.template.format(subject=subject, action=action, setting=setting, **scene.fill)
    elif scene.form == "short":
        core = f"{re.sub(r'^(a|an|the) ', '', subject)} {action}" + (f" {setting}" if w % 3 else "")
    elif scene.form == "tags" and w % 5 == 0:
        core = f"{setting}, {subject} {action}"
    else:
        core = f"{subject} {action} {setting}"
    modifiers = ordered_modifiers(scene)
    if scene.form == "prose":  # a description: opener and scene, details, sentences, then the tags
        pieces = [f"{words.OPENERS[(w >> 3) % len(words.OPENERS)]} {core}"]
        pieces += [" and ".join(scene.details)] if scene.details else []
        pieces += [extra.rstrip(".") for extra in scene.extras]
        pieces += ordered_modifiers(scene, ("camera", "lighting", "style", "quality"))
        if (w >> 7) % 3 == 0:  # one run-on sentence
            text = ", ".join(piece[:1].lower() + piece[1:] for piece in pieces)
        else:
            text = ". ".join(piece[:1].upper() + piece[1:] for piece in pieces) + "."
    elif scene.form == "casual":
        prefix = words.REQUEST_PREFIXES[(w >> 3) % len(words.REQUEST_PREFIXES)] if (w >> 5) % 3 else ""
        text = prefix + core + "".join((" " if (w >> 9) % 2 else ", ") + m for m in modifiers)
    else:
        text = ", ".join((core, *modifiers))
    return text[:1].upper() + text[1:] if (w >> 11) % 3 else text


def ordered_modifiers(scene: Scene, slots: tuple[str, ...] | None = None) -> list[str]:
    """The scene's modifiers (of `slots`, default all) in the order its wording picks."""
    values = {"camera": scene.camera, "lighting": (scene.lighting,) if scene.lighting else (),
              "style": (scene.style,) if scene.style else (), "details": scene.details, "quality": scene.quality,
              "extras": scene.extras}
    order = MODIFIER_ORDERS[(scene.wording >> 15) % len(MODIFIER_ORDERS)]
    return [value for slot in order if slots is None or slot in slots for value in values[slot]]


def with_article(noun: str) -> str:
    vowel = noun[:1] in "aeiou" and not noun.startswith(("uni", "one", "eu", "use"))
    return f"{'an' if vowel else 'a'} {noun}"


def misspell(word: str, persona: Persona) -> str:
    """The persona's consistent typo of `word`, or `word`: the same word is misspelt the same way each time."""
    digest = zlib.crc32(f"{persona.name}|{word.lower()}".encode())
    if digest % 1000 >= persona.typo_rate * 1000:
        return word
    i = 1 + (digest >> 10) % (len(word) - 2)
    kind = (digest >> 20) % 3
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swapped letters
    return word[:i] + word[i + 1:] if kind == 1 else word[:i] + word[i] + word[i:]  # dropped / doubled


def random_name(rng: random.Random) -> str:
    first, second = words.NAME_PARTS
    return (rng.choice(first) + rng.choice(second)).capitalize()


def random_brand(rng: random.Random) -> str:
    first, second, third = words.BRAND_PARTS
    return f"{(rng.choice(first) + rng.choice(second)).capitalize()} {rng.choice(third).capitalize()}"
