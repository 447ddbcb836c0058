"""Fewer indexes on JobResult: each one costs both writes of every job."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0002_postgresql_triggers'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='jobresult',
            constraint=models.UniqueConstraint(fields=('job_id',), name='jobs_result_job_id'),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='date_created',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='date_done',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='job_id',
            field=models.CharField(max_length=255, verbose_name='job id'),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='name',
            field=models.CharField(blank=True, max_length=255, verbose_name='job name'),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='queue',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='state',
            field=models.CharField(default='PENDING', max_length=50),
        ),
        migrations.AlterField(
            model_name='jobresult',
            name='worker',
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddIndex(
            model_name='jobresult',
            index=models.Index(fields=['-date_created'], name='jobs_result_created'),
        ),
    ]
