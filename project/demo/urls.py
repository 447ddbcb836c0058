from django.urls import path

from project.demo import views

app_name = "demo"

urlpatterns = [
    path("", views.index, name="index"),
    path("status.json", views.status, name="status"),
]
