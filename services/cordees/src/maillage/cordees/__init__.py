"""maillage.cordees.

Cordées de la réussite: têtes de cordée offer mentoring, collèges and lycées are matched to
them, REP+ first.
"""
