"""Leave room in each page of dispatch_command so status updates stay HOT
(heap-only tuples: no index rewritten) on PostgreSQL."""

from django.db import migrations


def fillfactor(value: int):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE dispatch_command SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):
    dependencies = [("dispatch", "0002_sweep_schedule")]

    operations = [migrations.RunPython(fillfactor(70), fillfactor(100))]
