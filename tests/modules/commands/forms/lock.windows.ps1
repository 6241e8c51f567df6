$ErrorActionPreference = 'Stop'
$d = [Console]::In.ReadLine() | ConvertFrom-Json
$user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
if (-not $user) { exit 3 }
$action = New-ScheduledTaskAction -Execute 'rundll32.exe' -Argument 'user32.dll,LockWorkStation'
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
$since = (Get-Date).AddSeconds(-2)
Register-ScheduledTask -TaskName $d.taskName -Action $action -Principal $principal `
  -Settings $settings -Force | Out-Null
try {
  Start-ScheduledTask -TaskName $d.taskName
  $deadline = (Get-Date).AddSeconds(10)
  do {
    Start-Sleep -Milliseconds 250
    $info = Get-ScheduledTaskInfo -TaskName $d.taskName
    $done = ($info.LastRunTime -ge $since) -and ($info.LastTaskResult -ne 267009)
  } until ($done -or (Get-Date) -gt $deadline)
} finally {
  Unregister-ScheduledTask -TaskName $d.taskName -Confirm:$false
}
if (-not $done) { exit 4 }
if ($info.LastTaskResult -ne 0) { Write-Output $info.LastTaskResult; exit 5 }
exit 0
