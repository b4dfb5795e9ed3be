from rest_framework import serializers

from fleet.models import Fleet, Site, Vehicle


class FleetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Fleet
        fields = ("id", "name", "active", "created_at", "updated_at")
        read_only_fields = ("created_at", "updated_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance is not None and not isinstance(self.instance, list | tuple):
            # The id is the primary key: setting it on save would insert a copy
            # of the fleet under the new id, not rename it.
            self.fields["id"].read_only = True


class SiteNameField(serializers.SlugRelatedField):
    """A site by name. Names are unique within a fleet only: a lookup here,
    across fleets, could find two (a 500) or tell that another fleet has such
    a site; ``VehicleSerializer.validate`` resolves it in the vehicle's fleet."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return data


class VehicleSerializer(serializers.ModelSerializer):
    fleet = serializers.PrimaryKeyRelatedField(queryset=Fleet.objects.all())
    site = SiteNameField(slug_field="name", queryset=Site.objects.all(), required=False, allow_null=True)

    class Meta:
        model = Vehicle
        fields = (
            "id",
            "fleet",
            "site",
            "cluster",
            "segment",
            "is_v2g",
            "battery_kwh",
            "max_charge_kw",
            "max_discharge_kw",
            "min_soc",
            "target_soc",
            "departure_at",
            "priority",
            "active",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance is not None and not isinstance(self.instance, list | tuple):
            self.fields["id"].read_only = True  # ids are in topics and logs

    def validate(self, attrs):
        fleet = attrs.get("fleet") or getattr(self.instance, "fleet", None)
        site_name = attrs.get("site")  # a name from SiteNameField, or None
        if isinstance(site_name, str) and fleet is not None:
            # Site names are unique per fleet, not globally: resolve within the fleet.
            site = Site.objects.filter(fleet=fleet, name=site_name).first()
            if site is None:
                raise serializers.ValidationError({"site": f"No site {site_name!r} in fleet {fleet.id!r}."})
            attrs["site"] = site
        for field in ("min_soc", "target_soc"):
            value = attrs.get(field)
            if value is not None and not 0 <= value <= 1:
                raise serializers.ValidationError({field: "A state of charge is a fraction between 0 and 1."})
        return attrs
