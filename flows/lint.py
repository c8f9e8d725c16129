"""Text lint: what no text a client reads may say, whoever wrote it.

* No medicine: every drug and active ingredient the article names, common painkillers and
  words of medication advice (a painkiller, a pill, an ointment, a pharmacy), in Russian,
  English and transliteration. Texts are folded (case, Cyrillic to Latin, look-alike
  letters, separators) before matching, so "Финалгон", "F-i-n-a-l-g-o-n" and a Latin word
  with one Cyrillic letter are all caught.
* No claim of a diagnosis ("I will diagnose you", "get your diagnosis").
* No phone number or opening hours typed into a text: ``{phone}`` and ``{hours}`` come from
  the settings, so a text can never show another number.
* No emergency number: what to do in an emergency (112 / 103) is the safety policy's text,
  and another text could contradict it.
* After a STOP or LATER outcome, nothing that suggests a massage, a course or booking one.

Every check reads the text as the client will (``plain``): entities decoded, tags removed
without splitting the word they sit in, invisible characters dropped, full-width and other
compatibility letters as plain ones, and a word mixing look-alike letters of two alphabets
read in its main alphabet. So "mass<b>age</b>", "mass&#97;ge", "mas\u200bsage" and a
"mаssage" with a Cyrillic "а" are all "massage".
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

__all__ = [
    "booking_words",
    "diagnosis_claims",
    "emergency_numbers",
    "fold",
    "medicine_names",
    "plain",
    "typed_hours",
    "typed_phones",
]

_TAG = re.compile(r"<[^>]*>")

#: Letters that look alike in Latin, Cyrillic and Greek: a word mixing them is read in the
#: alphabet most of its letters are in.
_TO_LATIN = str.maketrans(
    "аеорсхукмтіјѕАЕОРСХКМТВНαοερτυχικνΑΒΕΗΙΚΜΝΟΡΤΧ",
    "aeopcxykmtijsAEOPCXKMTBHaoepruxikvABEHIKMNOPTX",
)
_TO_CYRILLIC = str.maketrans("aeopcxykmtAEOPCXKMTBH", "аеорсхукмтАЕОРСХКМТВН")
#: A word mixing Latin with Cyrillic or Greek letters (found by the regex engine, so plain
#: words cost no Python work).
_MIXED = re.compile(
    r"\w*(?:[A-Za-z]\w*[\u0370-\u04ff]|[\u0370-\u04ff]\w*[A-Za-z])\w*"
    r"|\w*(?:[\u0370-\u03ff]\w*[\u0400-\u04ff]|[\u0400-\u04ff]\w*[\u0370-\u03ff])\w*"
)
#: Invisible format characters (zero-width spaces and joiners, direction marks, soft
#: hyphens, word joiners, the byte-order mark).
_INVISIBLE = re.compile(
    "[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]"
)


def _script(ch: str) -> str:
    if "a" <= ch.lower() <= "z":
        return "latin"
    if "\u0400" <= ch <= "\u04ff":
        return "cyrillic"
    if "\u0370" <= ch <= "\u03ff":
        return "greek"
    return ""


def _unmixed(match: re.Match[str]) -> str:
    word = match.group(0)
    scripts = [s for s in map(_script, word) if s]
    if len(set(scripts)) < 2:
        return word
    cyrillic = scripts.count("cyrillic") > scripts.count("latin") + scripts.count("greek")
    return word.translate(_TO_CYRILLIC if cyrillic else _TO_LATIN)


@functools.lru_cache(maxsize=8192)
def plain(text: str) -> str:
    """``text`` as the client reads it, for matching (see the module's docstring)."""
    text = html.unescape(_TAG.sub("", text))
    if text.isascii():
        return text  # (no invisible, compatibility or look-alike letters in ASCII)
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    return _MIXED.sub(_unmixed, text)


_TRANSLIT = str.maketrans(
    {
        "а": "a",
        "б": "b",
        "в": "v",
        "г": "g",
        "д": "d",
        "е": "e",
        "ё": "e",
        "ж": "zh",
        "з": "z",
        "и": "i",
        "й": "i",
        "к": "k",
        "л": "l",
        "м": "m",
        "н": "n",
        "о": "o",
        "п": "p",
        "р": "r",
        "с": "s",
        "т": "t",
        "у": "u",
        "ф": "f",
        "х": "h",
        "ц": "c",
        "ч": "ch",
        "ш": "sh",
        "щ": "sch",
        "ъ": "",
        "ы": "y",
        "ь": "",
        "э": "e",
        "ю": "yu",
        "я": "ya",
        "і": "i",
        "ї": "i",
        "є": "e",
    }
)
#: Latin spellings that different transliterations and the drugs' own names produce.
_SPELLINGS = (("ks", "x"), ("ph", "f"), ("kh", "h"), ("c", "k"), ("y", "i"), ("w", "v"))


@functools.lru_cache(maxsize=16384)
def fold(text: str) -> str:
    """Lower-case Latin letters only: transliterated, look-alikes merged, separators dropped."""
    low = plain(text).casefold().translate(_TRANSLIT)
    letters = "".join(ch for ch in low if "a" <= ch <= "z")
    for a, b in _SPELLINGS:
        letters = letters.replace(a, b)
    return letters


def _stems(*names: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(fold(n) for n in names))


#: Drugs and active ingredients the article names, then common painkillers and ointments.
MEDICINES = _stems(
    "Fastum",
    "Фастум",
    "ketoprofen",
    "кетопрофен",
    "Finalgon",
    "Финалгон",
    "nonivamide",
    "нонивамид",
    "nicoboxil",
    "никобоксил",
    "Dolobene",
    "Долобене",
    "dexpanthenol",
    "декспантенол",
    "heparin",
    "гепарин",
    "dimethyl sulfoxide",
    "диметилсульфоксид",
    "dimexide",
    "димексид",
    "ibuprofen",
    "ибупрофен",
    "diclofenac",
    "диклофенак",
    "Voltaren",
    "Вольтарен",
    "nimesulide",
    "нимесулид",
    "Nurofen",
    "Нурофен",
    "Ketorol",
    "Кеторол",
    "ketorolac",
    "analgin",
    "анальгин",
    "metamizole",
    "метамизол",
    "paracetamol",
    "парацетамол",
    "aspirin",
    "аспирин",
    "meloxicam",
    "мелоксикам",
    "Movalis",
    "Мовалис",
    "Mydocalm",
    "Мидокалм",
    "tolperisone",
    "толперизон",
    "Kapsikam",
    "Капсикам",
    "Nise",
    "Найз",
    "Nimesil",
    "Нимесил",
    "Ketonal",
    "Кетонал",
    "naproxen",
    "напроксен",
    "lidocaine",
    "лидокаин",
    "Citramon",
    "Цитрамон",
    "Pentalgin",
    "Пенталгин",
    # medication advice without a name
    "painkiller",
    "обезболивающ",
    "analgesic",
    "анальгетик",
    "tablet",
    "таблетк",
    "pill",
    "pills",
    "ointment",
    "мазь",
    "мази",
    "мазью",
    "pharmacy",
    "аптека",
    "аптеке",
    "аптеки",
)
#: Names this short could hide inside other words: they count as whole words only.
_SHORT = {m for m in MEDICINES if len(m) < 6}


def medicine_names(text: str) -> list[str]:
    """The medicine names found in ``text`` (folded spellings)."""
    words = [fold(w) for w in plain(text).split()]
    runs: list[str] = []  # words, with spelled-out letters ("F i n a l g o n") joined
    for w in words:
        if len(w) == 1 and runs and runs[-1].startswith(" "):
            runs[-1] += w
        else:
            runs.append(" " + w if len(w) == 1 else w)
    tokens = [r.strip() for r in runs if r.strip()]
    found = [m for m in MEDICINES if m not in _SHORT and any(m in tok for tok in tokens)]
    found += [m for m in MEDICINES if m in _SHORT and m in tokens]
    return found


_CLAIMS = (
    re.compile(r"\b(i|we)(\s*['’]ll|\s+will|\s+can|\s+shall)?\s+(make\s+a\s+)?diagnos", re.I),
    re.compile(r"\b(get|receive|find\s+out|learn)\s+(your|a)\s+diagnosis", re.I),
    re.compile(r"узна\w*\s+(свой|ваш)\s+диагноз", re.I),
    re.compile(r"определ(ю|им|яю|яем)\s*,?\s*что\s+(у\s+вас|с\s+вами)", re.I),
    re.compile(r"\byour\s+diagnosis\s+is\b", re.I),
    re.compile(r"\bthis\s+is\s+a\s+diagnosis\b", re.I),
    re.compile(r"(поставлю|поставим|ставлю|ставим|установлю|установим)\s+(вам\s+)?диагноз", re.I),
    re.compile(r"диагностиру(ю|ем)\b", re.I),
    re.compile(r"ваш\s+диагноз\s*[:—-]", re.I),
    re.compile(r"(?<!не\s)это\s+диагноз", re.I),
)


def diagnosis_claims(text: str) -> list[str]:
    """Phrases in ``text`` that present the bot's answer as a diagnosis."""
    read = plain(text)
    return [m.group(0) for rx in _CLAIMS for m in [rx.search(read)] if m]


_EMERGENCY = re.compile(
    r"\b(call|dial|ring|phone|звон\w*|позвон\w*|набер\w*|набир\w*)\W+(\w+\W+){0,3}?"
    r"(112|103|911|999)(?![\d:.,])|скор\w*\s+помощ\w*|ambulance|emergency\s+services",
    re.I,
)


def emergency_numbers(text: str) -> list[str]:
    """Emergency numbers to call, and the ambulance, mentioned in ``text``."""
    return sorted({m.group(0) for m in _EMERGENCY.finditer(plain(text))})


_PHONE = re.compile(r"(?:\+|\b)\d[\d\s()\-–.]{5,}\d")


def typed_phones(text: str) -> list[str]:
    """Phone numbers typed into ``text`` (seven digits or more)."""
    out = []
    for m in _PHONE.finditer(plain(text)):
        digits = re.sub(r"\D", "", m.group(0))
        if len(digits) >= 7:
            out.append(m.group(0).strip())
    return out


_TIME = re.compile(r"\b([01]?\d|2[0-4])[:.]([0-5]\d)\b")


def typed_hours(text: str) -> list[str]:
    """Opening hours typed into ``text``: two times of day at least eight hours apart."""
    hours = [int(h) + int(m) / 60 for h, m in _TIME.findall(text)]
    if len(hours) >= 2 and max(hours) - min(hours) >= 8:
        return [f"{int(min(hours))}:00…{int(max(hours))}:00"]
    return []


#: Words that suggest a massage, a course, aromatic oils or booking one (stems).
_BOOKING = re.compile(
    r"(массаж|сеанс|курс\b|курса|курсом|масл|аромат|запис\w*\s+на\s+(массаж|сеанс|курс)"
    r"|massage|session|\bcourse|\boils?\b|aroma|\bbook\w*\s+(a\s+|your\s+)?(massage|session|course))",
    re.I,
)


def booking_words(text: str) -> list[str]:
    """Words in ``text`` that would suggest a massage to a client who must not have one."""
    return sorted({m.group(0).casefold() for m in _BOOKING.finditer(plain(text))})
