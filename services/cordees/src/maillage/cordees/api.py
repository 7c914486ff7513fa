"""HTTP routes of the cordees service."""

from fastapi import APIRouter

router = APIRouter()
