"""Periodic jobs kept in the ORM and edited in the admin (the scheduler comes next)."""
