"""Time phrases -> a TimeWindow of Snowflake expressions; time-series grains ("weekly", "per month").

Relative windows stay relative to CURRENT_DATE() in the SQL ("last week", "the last fortnight", "this quarter");
named periods ("in March 2025", "Q3", "since Tuesday") become date literals computed from `today`, like an analyst
would write them. A named period without a year is the most recent one that has begun.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Callable

import sqlglot
from sqlglot import exp

from .plan import CannotAnswer, TimeWindow

NUMBER_WORDS = {"zero": 0, "no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15,
                "twenty": 20, "thirty": 30, "sixty": 60, "ninety": 90}
NUMBER = r"\d+|" + "|".join(NUMBER_WORDS)
MONTHS = {name: i + 1 for i, names in enumerate([
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
    ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
    ("december", "dec")]) for name in names}
WEEKDAYS = {name: i for i, names in enumerate([("monday", "mon"), ("tuesday", "tue", "tues"),
                                               ("wednesday", "wed"), ("thursday", "thu", "thurs"), ("friday", "fri"),
                                               ("saturday", "sat"), ("sunday", "sun")]) for name in names}
ORDINAL_QUARTERS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(sorted(WEEKDAYS, key=len, reverse=True))
_YEAR = r"(?:19|20)\d{2}"
_LEAD = r"(?:(?:in|over|during|for|within)\s+(?:the\s+)?)?"
GRAINS = [(r"daily|(?:per|by|each|every)\s+day|day\s+by\s+day", "DAY"),
          (r"weekly|(?:per|by|each|every)\s+week|week\s+by\s+week", "WEEK"),
          (r"monthly|(?:per|by|each|every)\s+month|month\s+by\s+month", "MONTH"),
          (r"over\s+time|trends?|timeline|time\s+series", "DAY")]


def number(word: str) -> int | None:
    return int(word) if word.isdigit() else NUMBER_WORDS.get(word)


def blank(text: str, m: re.Match) -> str:
    """The text with the match replaced by spaces (positions of the rest unchanged)."""
    return text[: m.start()] + " " * (m.end() - m.start()) + text[m.end():]


def _sql(template: str) -> exp.Expression:
    """A Snowflake expression from a fixed template filled with numbers and date parts only (never user text)."""
    return sqlglot.parse_one(template, read="snowflake")


def _date(d: dt.date) -> exp.Expression:
    return exp.cast(exp.Literal.string(d.isoformat()), "DATE")


TODAY = "CURRENT_DATE()"


@dataclass
class TimePhrases:
    """Reads at most one time window from a question; `units` come from the model's vocabulary."""

    units: dict[str, tuple[str, int]]
    today: Callable[[], dt.date] = dt.date.today

    def window(self, text: str) -> tuple[TimeWindow | None, str]:
        found = None
        for rx, make in self._rules():
            for m in list(re.finditer(rx, text)):
                window = make(m)
                if window is None:
                    continue
                if found is not None:
                    raise CannotAnswer(f"The question names two time ranges ({found.label} and {window.label}); "
                                       "ask for one at a time.")
                found, text = window, blank(text, m)
        return found, text

    def _rules(self) -> list[tuple[str, Callable[[re.Match], TimeWindow | None]]]:
        unit = "|".join(sorted(self.units, key=len, reverse=True))
        return [
            (r"\b(?:between|from)\s+(\d{4}-\d{2}-\d{2})\s+(?:and|to|until)\s+(\d{4}-\d{2}-\d{2})\b",
             self._between),
            (r"\b(?:since|after|from)\s+(\d{4}-\d{2}-\d{2})\b", self._since_iso),
            (r"\bon\s+(\d{4}-\d{2}-\d{2})\b", self._on_iso),
            (r"\byesterday\b", lambda m: TimeWindow(_sql(f"DATEADD(day, -1, {TODAY})"), _sql(TODAY), "yesterday")),
            (r"\btoday\b", lambda m: TimeWindow(_sql(TODAY), None, "today")),
            (rf"\b{_LEAD}(?:last|past|previous|preceding)\s+({NUMBER})\s+({unit})s?\b", self._last_n),
            (rf"\b{_LEAD}(last|past|previous|preceding)\s+({unit})\b", self._last_one),
            (rf"\b(?:this|current)\s+({unit})\b|\b({unit})\s+to\s+date\b", self._this),
            (r"\b(wtd|mtd|qtd|ytd)\b", self._to_date_abbreviation),
            (rf"\b(?:since|after|from)\s+(?:last\s+)?({_WEEKDAY})\b", self._since_weekday),
            (rf"\b(?:(since|after|from)\s+)?{_LEAD}(?:q([1-4])|({'|'.join(ORDINAL_QUARTERS)})\s+quarter)"
             rf"(?:\s+(?:of\s+)?({_YEAR}))?\b", self._quarter),
            (rf"\b(?:(since|after|from)\s+)?{_LEAD}({_MONTH})\.?(?:\s+(?:of\s+)?({_YEAR}))?\b", self._month),
            (rf"\b(?:(since|after|from)\s+)?(?:in|during|for|of)\s+({_YEAR})\b", self._year),
        ]

    # -- relative to CURRENT_DATE()
    def _last_n(self, m: re.Match) -> TimeWindow:
        part, per = self.units[m.group(2)]
        n = number(m.group(1)) * per
        return TimeWindow(_sql(f"DATEADD({part}, -{n}, {TODAY})"), None, f"the last {m.group(1)} {m.group(2)}s")

    def _last_one(self, m: re.Match) -> TimeWindow:
        word = m.group(2)
        part, per = self.units[word]
        if per == 1 and part in ("month", "quarter", "year") and m.group(1) != "past":
            # "last month" is the previous calendar month; "the past month" the month up to today
            start = f"DATEADD({part}, -1, DATE_TRUNC('{part}', {TODAY}))"
            return TimeWindow(_sql(start), _sql(f"DATE_TRUNC('{part}', {TODAY})"), f"the previous calendar {part}")
        label = "the last 7 days (last week)" if word == "week" else f"the {m.group(1)} {word} (rolling)"
        return TimeWindow(_sql(f"DATEADD({part}, -{per}, {TODAY})"), None, label)

    def _this(self, m: re.Match) -> TimeWindow | None:
        part, per = self.units[m.group(1) or m.group(2)]
        if per != 1 or part == "day":
            return None  # "this fortnight" has no calendar start; "this day" is "today"
        label = "this week (since Monday)" if part == "week" else f"this calendar {part}"
        return TimeWindow(_sql(f"DATE_TRUNC('{part}', {TODAY})"), None, label)

    def _to_date_abbreviation(self, m: re.Match) -> TimeWindow:
        part = {"w": "week", "m": "month", "q": "quarter", "y": "year"}[m.group(1)[0]]
        return TimeWindow(_sql(f"DATE_TRUNC('{part}', {TODAY})"), None, f"this {part} to date")

    # -- named periods: literals from today
    def _between(self, m: re.Match) -> TimeWindow:
        first, last = _iso(m.group(1)), _iso(m.group(2))
        if last < first:
            raise CannotAnswer(f"{last} is before {first}; name the earlier date first.")
        return TimeWindow(_date(first), _date(last + dt.timedelta(days=1)), f"{first} to {last}")

    def _since_iso(self, m: re.Match) -> TimeWindow:
        return TimeWindow(_date(_iso(m.group(1))), None, f"since {m.group(1)}")

    def _on_iso(self, m: re.Match) -> TimeWindow:
        day = _iso(m.group(1))
        return TimeWindow(_date(day), _date(day + dt.timedelta(days=1)), f"on {day}")

    def _since_weekday(self, m: re.Match) -> TimeWindow:
        today = self.today()
        start = today - dt.timedelta(days=(today.weekday() - WEEKDAYS[m.group(1)]) % 7)
        return TimeWindow(_date(start), None, f"since {start:%A} {start}")

    def _quarter(self, m: re.Match) -> TimeWindow:
        q = int(m.group(2)) if m.group(2) else ORDINAL_QUARTERS[m.group(3)]
        year = int(m.group(4)) if m.group(4) else self._latest_year(3 * q - 2)
        start = dt.date(year, 3 * q - 2, 1)
        return self._period(start, _add_months(start, 3), f"Q{q} {year}", since=bool(m.group(1)))

    def _month(self, m: re.Match) -> TimeWindow | None:
        word = m.group(2)
        if m.group(0).strip() == word:
            return None  # a bare "may" is a verb: a month name counts after in/since/during... or before a year
        month = MONTHS[word]
        year = int(m.group(3)) if m.group(3) else self._latest_year(month)
        start = dt.date(year, month, 1)
        return self._period(start, _add_months(start, 1), f"{start:%B %Y}", since=bool(m.group(1)))

    def _year(self, m: re.Match) -> TimeWindow:
        start = dt.date(int(m.group(2)), 1, 1)
        return self._period(start, dt.date(start.year + 1, 1, 1), str(start.year), since=bool(m.group(1)))

    def _latest_year(self, month: int) -> int:
        today = self.today()
        return today.year if month <= today.month else today.year - 1

    @staticmethod
    def _period(start: dt.date, end: dt.date, label: str, since: bool) -> TimeWindow:
        if since:
            return TimeWindow(_date(start), None, f"since {label}")
        return TimeWindow(_date(start), _date(end), label)


def grain(text: str) -> tuple[str | None, str]:
    for rx, name in GRAINS:
        m = re.search(rf"\b(?:{rx})\b", text)
        if m:
            return name, blank(text, m)
    return None, text


def _iso(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CannotAnswer(f"{text!r} is not a valid date (use YYYY-MM-DD).") from None


def _add_months(d: dt.date, months: int) -> dt.date:
    index = d.month - 1 + months
    return dt.date(d.year + index // 12, index % 12 + 1, 1)
