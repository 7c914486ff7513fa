"""HTTP routes of the stages3e service."""

from fastapi import APIRouter

router = APIRouter()
