# The dispatch log's indexes end in (at, id), the order of GET /api/dispatch/logs
# and of its cursor, so that a page is one index range scan with no sort; the
# dispatch_id index gains (at, id) for the same reason. New indexes first, then
# the ones they replace.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('dispatch', '0003_command_fillfactor'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='dispatchlogentry',
            index=models.Index(fields=['at', 'id'], name='dlog_at_id'),
        ),
        migrations.AddIndex(
            model_name='dispatchlogentry',
            index=models.Index(fields=['vehicle_id', 'at', 'id'], name='dlog_vehicle_at_id'),
        ),
        migrations.AddIndex(
            model_name='dispatchlogentry',
            index=models.Index(fields=['signal_type', 'at', 'id'], name='dlog_type_at_id'),
        ),
        migrations.AddIndex(
            model_name='dispatchlogentry',
            index=models.Index(fields=['dispatch_id', 'at', 'id'], name='dlog_dispatch_at_id'),
        ),
        migrations.AlterField(
            model_name='dispatchlogentry',
            name='dispatch_id',
            field=models.UUIDField(),
        ),
        migrations.RemoveIndex(
            model_name='dispatchlogentry',
            name='dlog_at',
        ),
        migrations.RemoveIndex(
            model_name='dispatchlogentry',
            name='dlog_vehicle_at',
        ),
        migrations.RemoveIndex(
            model_name='dispatchlogentry',
            name='dlog_type_at',
        ),
    ]
