"""Actions that only a booted Windows can do, run once at its first boot on the destination.

Installed offline as files and one service (no program of ours in the guest, only what Windows
ships):

- ``C:\\Program Files\\Coriolis\\Firstboot\\firstboot.cmd`` runs every file of ``scripts\\``
  in name order (``.cmd`` with cmd.exe, ``.ps1`` with PowerShell), appends their output to
  ``firstboot.log`` beside it, moves each one that ran to ``done\\``, then deletes the service;
- the ``CoriolisFirstboot`` service (every control set; an own-process service, automatic
  start, LocalSystem) whose ``ImagePath`` is ``cmd.exe /c start "" /b firstboot.cmd``: the
  service control manager starts cmd.exe at boot, which starts the script detached, so the
  script keeps running when the manager gives up on a program that is not a service (after
  its 30-second start timeout) and the boot goes on.

Windows' service registry values (``Type`` 0x10 own process, ``Start`` 2 automatic,
``ErrorControl`` 0 ignore): https://learn.microsoft.com/windows-hardware/drivers/install/inf-addservice-directive
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coriolis.osmorphing.windows.registry import Hive

SERVICE = "CoriolisFirstboot"
FOLDER = "/Program Files/Coriolis/Firstboot"
WINDOWS_FOLDER = "C:\\Program Files\\Coriolis\\Firstboot"

RUNNER = r"""@echo off
rem Written by Coriolis OS morphing: runs the first-boot actions once, then removes itself.
setlocal EnableExtensions
set "HERE=%~dp0"
set "LOG=%HERE%firstboot.log"
if not exist "%HERE%done" mkdir "%HERE%done"
for /f "delims=" %%F in ('dir /b /on "%HERE%scripts"') do call :run "%%F"
sc.exe delete {service} >> "%LOG%" 2>&1
exit /b 0
:run
echo [%date% %time%] running %~1 >> "%LOG%"
if /i "%~x1"==".ps1" (
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%HERE%scripts\%~1" >> "%LOG%" 2>&1
) else (
  cmd.exe /c "%HERE%scripts\%~1" >> "%LOG%" 2>&1
)
echo [%date% %time%] %~1 exited with %errorlevel% >> "%LOG%"
move /y "%HERE%scripts\%~1" "%HERE%done\" > nul
exit /b 0
""".replace("{service}", SERVICE)


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def image_path() -> str:
    return f'%SystemRoot%\\System32\\cmd.exe /c start "" /b "{WINDOWS_FOLDER}\\firstboot.cmd"'


def register_service(hive: Hive, control_sets: list[str], log: Callable[[str], None]) -> None:
    """The ``CoriolisFirstboot`` service in every control set of an open SYSTEM hive."""
    for cs in control_sets:
        key = f"{cs}\\Services\\{SERVICE}"
        hive.set_dword(key, "Type", 0x10)
        hive.set_dword(key, "Start", 2)
        hive.set_dword(key, "ErrorControl", 0)
        hive.set_sz(key, "ImagePath", image_path(), expand=True)
        hive.set_sz(key, "ObjectName", "LocalSystem")
        hive.set_sz(key, "DisplayName", "Coriolis first-boot actions")
    log(f"first boot: service {SERVICE} (automatic, LocalSystem) in "
        f"{', '.join(control_sets)}: runs {WINDOWS_FOLDER}\\firstboot.cmd once")


class FirstbootActions:
    """The scripts to run at first boot, numbered in the order they were added."""

    def __init__(self) -> None:
        self.scripts: list[tuple[str, str, str]] = []  # (file name, text, what it does)

    def add(self, name: str, text: str, what: str, powershell: bool = False) -> None:
        ext = "ps1" if powershell else "cmd"
        self.scripts.append((f"{len(self.scripts) + 1:02d}-{name}.{ext}", text, what))

    def install(self, g: Any, resolve: Callable[[str], str], log: Callable[[str], None]) -> None:
        """Write the runner and the scripts into the mounted guest (``resolve`` gives the
        guest's own spelling of a path)."""
        folder = resolve(FOLDER)
        g.mkdir_p(f"{folder}/scripts")
        g.write(f"{folder}/firstboot.cmd", crlf(RUNNER))
        for file_name, text, what in self.scripts:
            g.write(f"{folder}/scripts/{file_name}", crlf(text))
            log(f"first boot: {WINDOWS_FOLDER}\\scripts\\{file_name}: {what}")
