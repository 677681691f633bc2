"""A small corpus for the search tests: twenty documents, each on its own topic, written as real
Parquet and JSONL files."""

from __future__ import annotations

import json
import os
from typing import Dict, List

import pyarrow as pa
import pyarrow.parquet as pq

DOCS: List[Dict[str, str]] = [
    {"id": "photosynthesis", "title": "Photosynthesis",
     "text": "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to produce "
             "glucose and oxygen. It takes place in chloroplasts, which contain the pigment chlorophyll."},
    {"id": "volcano", "title": "Volcanoes",
     "text": "A volcano erupts when molten magma rises through the crust and escapes as lava, ash and gas. "
             "Stratovolcanoes such as Mount Fuji are built from layers of hardened lava."},
    {"id": "chess", "title": "The Sicilian Defence",
     "text": "The Sicilian Defence is a chess opening that begins 1.e4 c5. Black fights for the centre from "
             "the flank and often gets sharp, unbalanced positions."},
    {"id": "aqueduct", "title": "Roman aqueducts",
     "text": "Roman engineers built aqueducts that carried water across valleys on stone arches, using a "
             "gentle gradient so gravity alone moved it into the cities."},
    {"id": "jazz", "title": "Bebop",
     "text": "Bebop is a style of jazz developed in the 1940s by musicians such as Charlie Parker, whose "
             "saxophone solos used fast tempos and complex chord changes."},
    {"id": "basketball", "title": "Basketball",
     "text": "In basketball a player must dribble the ball while moving; a travelling violation is called "
             "when a player takes steps without dribbling. A shot beyond the arc scores three points."},
    {"id": "sourdough", "title": "Sourdough bread",
     "text": "Sourdough is leavened by a starter of wild yeast and lactobacilli. The starter is fed with "
             "flour and water, and the dough ferments slowly, giving a tangy crumb."},
    {"id": "black_hole", "title": "Black holes",
     "text": "A black hole is a region of spacetime where gravity is so strong that nothing, not even "
             "electromagnetic radiation, can escape once it crosses the event horizon."},
    {"id": "income_tax", "title": "Income tax returns",
     "text": "An income tax return reports wages, deductions and credits to the revenue authority; "
             "self-employed taxpayers usually make quarterly estimated payments."},
    {"id": "honey_bee", "title": "Honey bees",
     "text": "Honey bees live in colonies with a single queen, thousands of worker bees and seasonal drones. "
             "Workers perform a waggle dance to tell the hive where nectar is found."},
    {"id": "everest", "title": "Mount Everest",
     "text": "Mount Everest, at 8,849 metres, is the highest mountain above sea level. Expeditions rely on "
             "Sherpa guides, fixed ropes and supplemental oxygen in the death zone."},
    {"id": "vaccine", "title": "Vaccination",
     "text": "A vaccine exposes the immune system to a harmless antigen, so that antibodies and memory "
             "cells are ready when the real pathogen arrives."},
    {"id": "python", "title": "Python programming language",
     "text": "Python is an interpreted programming language known for readable syntax, significant "
             "indentation and a large standard library."},
    {"id": "coral", "title": "Coral reefs",
     "text": "Coral reefs are built by colonies of tiny polyps that secrete calcium carbonate. Warming "
             "seas cause bleaching, when corals expel the algae living in their tissues."},
    {"id": "bastille", "title": "Storming of the Bastille",
     "text": "On 14 July 1789 Parisians stormed the Bastille, a royal fortress and prison, an event that "
             "became the symbol of the French Revolution."},
    {"id": "origami", "title": "Origami",
     "text": "Origami is the Japanese art of folding a single square sheet of paper into figures such as "
             "cranes, without cutting or gluing."},
    {"id": "tides", "title": "Tides",
     "text": "Tides are the regular rise and fall of sea levels caused by the gravitational pull of the "
             "Moon and the Sun acting on the oceans."},
    {"id": "espresso", "title": "Espresso",
     "text": "Espresso is brewed by forcing hot water at about nine bars of pressure through finely ground "
             "coffee, producing a concentrated shot topped with crema."},
    {"id": "glacier", "title": "Glaciers",
     "text": "Glaciers form where snowfall exceeds melting for many years; the compacted ice flows downhill "
             "and carves U-shaped valleys and moraines."},
    {"id": "ev_battery", "title": "Electric vehicle batteries",
     "text": "Electric vehicles store energy in lithium-ion battery packs; range depends on capacity in "
             "kilowatt-hours, and fast chargers use direct current."},
]


def write_parquet(path: str, docs: List[Dict] = DOCS) -> str:
    pq.write_table(pa.Table.from_pylist(docs), path)
    return path


def write_jsonl(path: str, docs: List[Dict] = DOCS) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    return path


def write_corpus(directory: str, name: str = "corpus.parquet", docs: List[Dict] = DOCS) -> str:
    path = os.path.join(directory, name)
    return write_parquet(path, docs) if name.endswith(".parquet") else write_jsonl(path, docs)
