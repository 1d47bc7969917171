"""Infraflow package."""
