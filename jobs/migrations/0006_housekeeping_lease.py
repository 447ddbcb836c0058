"""The lease under which one process at a time deletes expired rows (jobs.housekeeping).

No index is added for it: each kind it deletes is found through one that exists (results
through (state, date_done), dead letters, worker rows and unique locks through their dates).
"""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0005_rename_jobresult_jobrecord'),
    ]

    operations = [
        migrations.CreateModel(
            name='Lease',
            fields=[
                ('name', models.CharField(max_length=100, primary_key=True, serialize=False)),
                ('holder', models.CharField(blank=True, help_text='The process doing the work now (empty: none).', max_length=255)),
                ('held_until', models.DateTimeField(blank=True, help_text="When the holder's claim runs out, should its process die before letting go.", null=True)),
                ('due_at', models.DateTimeField(default=django.utils.timezone.now, help_text='When the work is next due.')),
            ],
        ),
    ]
