"""What the jobs admins share: rows written by workers and brokers, viewable and deletable,
never added or edited by hand; actions on one object from its page; reports of what an action
did."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join


class DeferringChangeList(ChangeList):
    """A change list that leaves the model admin's ``list_defer`` columns unread.

    Arguments, results and bodies can be large; the list never shows them.
    """

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        defer = self.model_admin.list_defer
        return queryset.defer(*defer) if defer else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by workers: viewable and deletable, never added or edited by hand."""

    list_defer: tuple[str, ...] = ()
    list_per_page = 50
    show_full_result_count = False  # a COUNT(*) of a huge table on every page is too slow

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def may(self, request, action: str) -> bool:
        """Whether the user holds ``action`` ("change", "delete", ...) on this model."""
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")

    def get_changelist(self, request, **kwargs):
        return DeferringChangeList

    def url_name(self, view: str) -> str:
        """The name of one of this model's admin URLs: ``url_name("change")``."""
        opts = self.model._meta
        return f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{view}"

    def object_action(self, request, object_id, permission: str, action):
        """A POST from an object's page: the list ``action`` on that one object, then back
        to its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.may(request, permission):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.model._meta, object_id)
        action(request, self.model._default_manager.filter(pk=obj.pk))
        return HttpResponseRedirect(reverse(self.url_name("change"), args=[obj.pk]))

    def report(self, request, done: list, failed: list[tuple[object, str]], *, success: str,
               failure: str) -> None:
        """Tell the user what an action did: one line for the done, one per failure
        (``failure`` names ``{obj}`` and ``{reason}``)."""
        for obj, reason in failed:
            self.message_user(request, failure.format(obj=obj, reason=reason), messages.ERROR)
        if done:
            items = format_html_join(", ", "{}", ((item,) for item in done))
            self.message_user(request, format_html("{}: {}", success, items), messages.SUCCESS)
