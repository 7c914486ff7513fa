"""maillage.funding.

Programme 147 (politique de la ville) conventions: officers approve and pay tranches.
"""
