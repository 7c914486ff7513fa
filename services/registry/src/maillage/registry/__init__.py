"""maillage.registry.

The registre des partenaires: partner organisations register, are verified and receive their
credentials.
"""
