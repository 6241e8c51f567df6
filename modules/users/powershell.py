"""How jcstate talks to Windows PowerShell: fixed scripts, data on standard input.

Every change is one ``Run`` of::

    powershell.exe -NoProfile -NonInteractive -EncodedCommand <base64 of UTF-16LE script>

``-EncodedCommand`` ("Accepts a Base64-encoded string version of a command", about_PowerShell_exe)
is used rather than ``-Command -`` because standard input is kept for *data*: the first line is
one JSON object (names, full names, dates), read by the script with
``[Console]::In.ReadLine() | ConvertFrom-Json``; for a password, the second line is the plaintext,
read with ``[Console]::In.ReadLine() | ConvertTo-SecureString -AsPlainText -Force`` and handed to
the cmdlet as a SecureString. So no user name is ever interpolated into script text (a name like
``a';Remove-LocalUser x;'`` stays a string), no password is in argv (visible to every process),
and the scripts below are constants that can be reviewed once. The whole stdin is a
:class:`~jcstate.secret.Secret` when it carries a password: plans show it as ``(secret)``.

Each script is in :data:`SCRIPTS`, by name; tests decode the argv and look the script up there.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from jcstate.plan import Run
from jcstate.secret import Secret

__all__ = ["POWERSHELL", "SCRIPTS", "decode", "encode", "script_run"]

POWERSHELL = ("powershell.exe", "-NoProfile", "-NonInteractive", "-EncodedCommand")

_DATA = "$ErrorActionPreference = 'Stop'\n$d = [Console]::In.ReadLine() | ConvertFrom-Json\n"
_PASSWORD = "$p = [Console]::In.ReadLine() | ConvertTo-SecureString -AsPlainText -Force\n"
# ``expires: never`` sends neverExpires: -AccountExpires cannot take $null, and the cmdlets
# refuse -AccountExpires together with -AccountNeverExpires (InvalidParametersException), so the
# data carries one of the two, never both.
_EXPIRY = (
    "if ($null -ne $d.expires) {"
    " $a.AccountExpires = [datetime]::ParseExact($d.expires, 'yyyy-MM-dd', $null) }\n"
    "if ($d.neverExpires) { $a.AccountNeverExpires = $true }\n"
)
_GROUP = (
    "if ($null -ne $d.groupSid) { $g = Get-LocalGroup -SID $d.groupSid }"
    " else { $g = Get-LocalGroup -Name $d.group }\n"
)

# Facts: ONE call. SIDs are selected as .Value strings (a SecurityIdentifier object would
# serialise as {BinaryLength, AccountDomainSid, Value}); -Depth 5 because ConvertTo-Json's default
# depth of 2 would flatten the member lists to strings. Windows PowerShell 5.1 writes DateTime
# as "\/Date(ms)\/", PowerShell 7 as ISO 8601: the parser reads both.
# The console user is Win32_ComputerSystem's UserName ("DOMAIN\user", $null when nobody is
# logged in at the console); a failed CIM query is caught into Console.Error, so lock-out safety
# can warn instead of the whole facts call failing.
FACTS = """$ErrorActionPreference = 'Stop'
$users = @(Get-LocalUser | ForEach-Object {
  [ordered]@{ Name = $_.Name; FullName = $_.FullName; Enabled = $_.Enabled;
              SID = $_.SID.Value; AccountExpires = $_.AccountExpires } })
$groups = @(Get-LocalGroup | ForEach-Object {
  $g = $_
  [ordered]@{ Name = $g.Name; SID = $g.SID.Value;
    Members = @(Get-LocalGroupMember -Group $g | ForEach-Object {
      [ordered]@{ Name = $_.Name; SID = $_.SID.Value; ObjectClass = $_.ObjectClass;
                  PrincipalSource = [string]$_.PrincipalSource } }) } })
$console = [ordered]@{ UserName = $null; Error = $null }
try { $console.UserName = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName }
catch { $console.Error = [string]$_.Exception.Message }
[ordered]@{ Users = $users; Groups = $groups; Console = $console } |
  ConvertTo-Json -Depth 5 -Compress
"""

_HAVE = "$have = @(Get-LocalGroupMember -Group $g | ForEach-Object { $_.SID.Value })\n"

# Add-LocalGroupMember fails on a member already there (MemberExistsException), and
# Remove-LocalGroupMember on one not there: the member scripts compare SIDs first, so a member
# that a user's own change added earlier in the run is no error (gpasswd -M is idempotent too).
_ADD = """foreach ($m in $d.members) {
  $u = Get-LocalUser -Name $m
  if ($have -notcontains $u.SID.Value) { Add-LocalGroupMember -Group $g -Member $u }
}
"""
_REMOVE = """foreach ($m in $d.members) {
  $u = Get-LocalUser -Name $m
  if ($have -contains $u.SID.Value) { Remove-LocalGroupMember -Group $g -Member $u }
}
"""
_NEW_USER = """$a = @{ Name = $d.name; Password = $p }
if ($null -ne $d.fullName) { $a.FullName = $d.fullName }
if ($d.disabled) { $a.Disabled = $true }
"""
_SET_USER = """$a = @{ Name = $d.name }
if ($null -ne $d.fullName) { $a.FullName = $d.fullName }
"""

SCRIPTS: dict[str, str] = {
    "facts": FACTS,
    "New-LocalUser": _DATA + _PASSWORD + _NEW_USER + _EXPIRY + "New-LocalUser @a | Out-Null\n",
    "Set-LocalUser": _DATA + _SET_USER + _EXPIRY + "Set-LocalUser @a\n",
    "Enable-LocalUser": _DATA + "Enable-LocalUser -Name $d.name\n",
    "Disable-LocalUser": _DATA + "Disable-LocalUser -Name $d.name\n",
    "Remove-LocalUser": _DATA + "Remove-LocalUser -Name $d.name\n",
    "New-LocalGroup": _DATA + "New-LocalGroup -Name $d.name | Out-Null\n",
    "Remove-LocalGroup": _DATA + "Remove-LocalGroup -Name $d.name\n",
    "Add-LocalGroupMember": _DATA + _GROUP + _HAVE + _ADD,
    "Remove-LocalGroupMember": _DATA + _GROUP + _HAVE + _REMOVE,
}


def encode(script: str) -> str:
    """-EncodedCommand's format: base64 of the UTF-16LE bytes of the script."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def decode(encoded: str) -> str:
    return base64.b64decode(encoded).decode("utf-16-le")


def script_run(
    name: str, data: dict[str, Any] | None = None, password: Secret | None = None
) -> Run:
    """A Run of script ``name`` with ``data`` as one JSON line (and the password on the next)."""
    argv = (*POWERSHELL, encode(SCRIPTS[name]))
    if data is None:
        return Run(argv)
    line = json.dumps(data, sort_keys=True, ensure_ascii=True) + "\n"
    if password is None:
        return Run(argv, stdin=line)
    return Run(argv, stdin=Secret(line + password.reveal() + "\n"))
