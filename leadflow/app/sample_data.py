"""Deterministic synthetic leads for the demo and benchmarks — no real people.

Names and companies are combined from short word lists with a seeded generator, so the same
seed always gives the same leads, and every address is under the reserved ``.example`` TLD.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Margaret",
    "Tim",
    "Katherine",
    "Linus",
    "Sophie",
    "Guido",
    "Hedy",
    "John",
    "Mary",
    "Dennis",
    "Shafi",
    "Zoë",
    "Åsa",
    "José",
    "Chloé",
    "Mateus",
    "Priya",
    "Wei",
    "Yuki",
    "Olu",
    "Fatima",
    "Lars",
    "Ines",
    "Noah",
    "Maya",
    "Leo",
    "Amara",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Hamilton",
    "Berners",
    "Johnson",
    "Torvalds",
    "Wilson",
    "Rossum",
    "Lamarr",
    "Backus",
    "Shaw",
    "Ritchie",
    "Goldwasser",
    "Müller",
    "Ångström",
    "García",
    "Dubois",
    "Silva",
    "Patel",
    "Zhang",
    "Tanaka",
    "Adeyemi",
    "Haddad",
    "Nilsson",
    "Costa",
]
PREFIX = [
    "North",
    "Blue",
    "Bright",
    "Iron",
    "Silver",
    "Green",
    "Swift",
    "Clear",
    "Red",
    "Summit",
    "Harbor",
    "Pine",
    "Cedar",
    "Quantum",
    "Atlas",
    "Nova",
    "Orbit",
    "Prime",
]
SUFFIX = [
    "wind",
    "stone",
    "field",
    "line",
    "works",
    "path",
    "forge",
    "leaf",
    "bridge",
    "gate",
    "wave",
    "point",
]
KIND = [
    "Analytics",
    "Labs",
    "Systems",
    "Logistics",
    "Health",
    "Media",
    "Commerce",
    "Finance",
    "Software",
    "Cloud",
]
INDUSTRIES = [
    ("saas", 5),
    ("fintech", 3),
    ("ecommerce", 3),
    ("healthcare", 2),
    ("logistics", 2),
    ("media", 2),
    ("manufacturing", 2),
    ("education", 1),
    ("nonprofit", 1),
]
TITLES = [
    ("CTO", 2),
    ("VP Engineering", 2),
    ("Head of Data", 2),
    ("Chief Revenue Officer", 1),
    ("Engineering Manager", 3),
    ("Director of Operations", 2),
    ("Data Analyst", 3),
    ("Software Engineer", 3),
    ("Marketing Manager", 2),
    ("CEO", 1),
    ("Intern", 1),
]
ZONES = [
    ("US", "America/New_York", 5),
    ("US", "America/Chicago", 3),
    ("US", "America/Denver", 1),
    ("US", "America/Los_Angeles", 3),
    ("CA", "America/Toronto", 1),
    ("CA", "America/Vancouver", 1),
]
SOURCES = [("website", 4), ("webinar", 2), ("referral", 1), ("trade_show", 1), ("linkedin", 2)]
COLUMNS = [
    "E-mail",
    "First Name",
    "Last Name",
    "Company",
    "Job Title",
    "Employees",
    "Industry",
    "Country",
    "Time Zone",
    "Lead Source",
    "Deal Value",
    "plan_interest",
    "web_visits",
    "contract_end",
    "do_not_email",
]


def _pick(rng: random.Random, weighted: list[tuple[Any, int]] | list[tuple[Any, ...]]) -> Any:
    items = [w[:-1] if len(w) > 2 else w[0] for w in weighted]
    weights = [w[-1] for w in weighted]
    return rng.choices(items, weights=weights, k=1)[0]


def generate_leads(count: int, *, seed: int = 7, start: int = 0) -> Iterator[dict[str, str]]:
    """``count`` CSV rows (column names as a CRM export would have them)."""
    rng = random.Random(seed * 1_000_003 + start)
    for n in range(start, start + count):
        first = rng.choice(FIRST)
        last = rng.choice(LAST)
        company = f"{rng.choice(PREFIX)}{rng.choice(SUFFIX)} {rng.choice(KIND)}"
        domain = company.split()[0].lower() + ".example"
        country, zone = _pick(rng, ZONES)
        size = int(rng.lognormvariate(4.5, 1.4)) + 1
        email_name = f"{first[0]}.{last}".lower().encode("ascii", "ignore").decode() or "lead"
        yield {
            "E-mail": f"{email_name}{n}@{domain}",
            "First Name": first,
            "Last Name": last,
            "Company": company,
            "Job Title": _pick(rng, TITLES),
            "Employees": str(size),
            "Industry": _pick(rng, INDUSTRIES),
            "Country": country,
            "Time Zone": zone if rng.random() > 0.05 else "",
            "Lead Source": _pick(rng, SOURCES),
            "Deal Value": f"{round(min(size, 5000) * rng.uniform(40, 90), -2):.0f}",
            "plan_interest": rng.choice(["", "", "starter", "team", "enterprise"]),
            "web_visits": str(rng.randint(0, 12)),
            "contract_end": f"2027-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "do_not_email": "yes" if rng.random() < 0.01 else "",
        }


def write_csv(path: Path, rows: list[dict[str, str]] | Iterator[dict[str, str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            written += 1
    return written
