"""maillage.stages3e.

Stages de 3e: partners publish one-week observation internships, schools apply for their pupils.
"""
