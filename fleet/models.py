"""The fleet registry: fleets, their sites and their vehicles; and the API
tokens, since the fleet is the unit of access (see fleet/access.py).

Conventions (SPEC §2): powers in kW and energies in kWh, both non-negative
here (they are limits; the sign lives in setpoints); state of charge fields
named ``*_soc`` are fractions 0-1; datetimes are aware UTC.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

ID_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
    "Use letters, digits and . _ : - only (the id appears in MQTT topics).",
)
SOC_VALIDATORS = [MinValueValidator(0.0), MaxValueValidator(1.0)]
NON_NEGATIVE = [MinValueValidator(0.0)]


class Fleet(models.Model):
    """An operator's fleet: the unit of access control and reporting."""

    id = models.SlugField(primary_key=True, max_length=64, help_text="Stable identifier, e.g. 'paris-vans'.")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or self.id


class Site(models.Model):
    """A place where vehicles plug in (a depot, an office car park)."""

    fleet = models.ForeignKey(Fleet, on_delete=models.CASCADE, related_name="sites")
    name = models.CharField(max_length=200)
    grid_import_limit_kw = models.FloatField(
        null=True, blank=True, validators=NON_NEGATIVE, help_text="Connection limit for charging (kW)."
    )
    grid_export_limit_kw = models.FloatField(
        null=True, blank=True, validators=NON_NEGATIVE, help_text="Connection limit for injection (kW)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["fleet_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["fleet", "name"], name="site_unique_name_per_fleet"),
        ]

    def __str__(self) -> str:
        return f"{self.fleet_id}/{self.name}"


class VehicleQuerySet(models.QuerySet):
    def active(self) -> VehicleQuerySet:
        return self.filter(active=True, fleet__active=True)

    def v2g(self) -> VehicleQuerySet:
        return self.active().filter(is_v2g=True, max_discharge_kw__gt=0)


class Vehicle(models.Model):
    """An electric vehicle (or its charge point) that can receive setpoints."""

    id = models.CharField(
        primary_key=True,
        max_length=64,
        validators=[ID_VALIDATOR],
        help_text="Stable id used in MQTT topics: vehicle/<id>/command.",
    )
    fleet = models.ForeignKey(Fleet, on_delete=models.PROTECT, related_name="vehicles")
    site = models.ForeignKey(Site, on_delete=models.SET_NULL, null=True, blank=True, related_name="vehicles")
    cluster = models.CharField(max_length=64, blank=True, db_index=True)
    segment = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="Dispatch segment; selects per-segment strategy and weights.",
    )
    is_v2g = models.BooleanField("V2G capable", default=True)
    battery_kwh = models.FloatField(validators=[MinValueValidator(0.1)])
    max_charge_kw = models.FloatField(validators=NON_NEGATIVE)
    max_discharge_kw = models.FloatField(validators=NON_NEGATIVE)
    min_soc = models.FloatField(
        default=0.2, validators=SOC_VALIDATORS, help_text="Never discharge below this (0-1)."
    )
    target_soc = models.FloatField(
        default=0.8, validators=SOC_VALIDATORS, help_text="SoC wanted at departure (0-1)."
    )
    departure_at = models.DateTimeField(null=True, blank=True, help_text="Next planned departure.")
    priority = models.SmallIntegerField(
        default=0, help_text="Higher is preferred when vehicles are otherwise equal."
    )
    active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = VehicleQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["fleet", "active", "is_v2g"], name="vehicle_dispatchable")]
        constraints = [
            models.CheckConstraint(condition=Q(battery_kwh__gt=0), name="vehicle_battery_positive"),
            models.CheckConstraint(
                condition=Q(max_charge_kw__gte=0) & Q(max_discharge_kw__gte=0),
                name="vehicle_power_limits_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(min_soc__gte=0, min_soc__lte=1) & Q(target_soc__gte=0, target_soc__lte=1),
                name="vehicle_soc_fractions",
            ),
        ]

    def __str__(self) -> str:
        return self.id

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.site_id and self.fleet_id and self.site.fleet_id != self.fleet_id:
            raise ValidationError({"site": "The site belongs to another fleet."})


class ApiToken(models.Model):
    """A bearer token for the REST API, scoped to some fleets or to all of them.

    Only a SHA-256 of the token is stored: the plaintext is shown once when it
    is issued (admin or ``api_token_create``) and cannot be recovered. The
    token reads ``v2g_<prefix>_<secret>``; the prefix is not secret and finds
    the row, the hash of the whole token is then compared in constant time.
    """

    PREFIX_LENGTH = 8

    name = models.CharField(max_length=200, help_text="Who or what uses it, e.g. 'EMS integration'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False, help_text="SHA-256 of the token, hex.")
    all_fleets = models.BooleanField(
        default=False, help_text="Every fleet, present and future (else only the fleets chosen)."
    )
    fleets = models.ManyToManyField(Fleet, blank=True, related_name="api_tokens")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Updated at most once a minute.")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (v2g_{self.prefix}_…)"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def split(cls, token: str) -> str | None:
        """The prefix of a well-formed token, else None."""
        if not token.startswith("v2g_") or len(token) < 4 + cls.PREFIX_LENGTH + 2:
            return None
        prefix, sep = token[4 : 4 + cls.PREFIX_LENGTH], token[4 + cls.PREFIX_LENGTH]
        return prefix if sep == "_" and prefix.isalnum() else None

    def new_key(self) -> str:
        """Give the token a fresh secret; returns the plaintext, never stored."""
        self.prefix = secrets.token_hex(self.PREFIX_LENGTH // 2)
        while ApiToken.objects.filter(prefix=self.prefix).exists():  # 1 in 4 billion
            self.prefix = secrets.token_hex(self.PREFIX_LENGTH // 2)
        token = f"v2g_{self.prefix}_{secrets.token_urlsafe(32)}"
        self.key_hash = self.hash(token)
        return token

    def status(self, now) -> str:
        """The state of the token now: revoked, expired or active."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class OperatorAccess(models.Model):
    """Which fleets a console user (a staff user of the admin, or of the API by
    session) may see and act on: the user's counterpart of an API token's
    fleets. Superusers see every fleet; any other user sees only what this row
    grants, and nothing without one (see fleet/access.py)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fleet_access"
    )
    all_fleets = models.BooleanField(
        default=False, help_text="Every fleet, present and future (else only the fleets chosen)."
    )
    fleets = models.ManyToManyField(Fleet, blank=True, related_name="operators")

    class Meta:
        verbose_name = "fleet access"
        verbose_name_plural = "fleet access"

    def __str__(self) -> str:
        return f"fleet access of {self.user}"
