"""HTTP routes of the registry service."""

from fastapi import APIRouter

router = APIRouter()
