package cortexsim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// id renders an id as a string, or as a number under Options.Drift when it is numeric.
func (s *Sim) idValue(id string) any {
	if s.o.Drift {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			return n
		}
	}
	return id
}

func xsoarTime(t time.Time) string {
	if t.IsZero() {
		return xsoarZero
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

// xdrIncident renders the public_api incident object (legacy and XSIAM-era fields).
func (s *Sim) xdrIncident(inc *incident) map[string]any {
	var resolved any
	if strings.HasPrefix(inc.status, "resolved") {
		resolved = inc.modified.UnixMilli()
	}
	n := len(inc.alerts)
	sevCount := map[string]int{}
	for i := range n {
		sevCount[[]string{"low", "medium", "high", "critical"}[(int(inc.num)+i)%4]]++
	}
	if s.o.Lean {
		return map[string]any{"incident_id": s.idValue(inc.id), "creation_time": inc.created.UnixMilli(),
			"modification_time": inc.modified.UnixMilli(), "status": inc.status, "alert_count": n,
			"resolved_timestamp": resolved}
	}
	var comment any
	if resolved != nil {
		comment = "Closed by the SOC after review"
	}
	return map[string]any{
		"incident_id":                    s.idValue(inc.id),
		"incident_name":                  fmt.Sprintf("Suspicious activity %s", inc.id),
		"creation_time":                  inc.created.UnixMilli(),
		"modification_time":              inc.modified.UnixMilli(),
		"detection_time":                 nil,
		"status":                         inc.status,
		"severity":                       inc.severity,
		"description":                    inc.description,
		"assigned_user_mail":             nil,
		"assigned_user_pretty_name":      nil,
		"alert_count":                    n,
		"low_severity_alert_count":       sevCount["low"],
		"med_severity_alert_count":       sevCount["medium"],
		"high_severity_alert_count":      sevCount["high"],
		"critical_severity_alert_count":  sevCount["critical"],
		"user_count":                     1,
		"host_count":                     1,
		"notes":                          nil,
		"resolve_comment":                comment,
		"resolved_timestamp":             resolved,
		"manual_severity":                nil,
		"manual_description":             nil,
		"xdr_url":                        fmt.Sprintf("https://%s/incident-view?caseId=%s", s.o.Host, inc.id),
		"starred":                        inc.num%7 == 0,
		"starred_manually":               false,
		"hosts":                          []string{"HOST-" + inc.id + ":" + fmt.Sprintf("%032x", inc.num)},
		"users":                          []string{"CORP\\user" + inc.id},
		"incident_sources":               []string{"XDR Agent"},
		"rule_based_score":               nil,
		"predicted_score":                nil,
		"manual_score":                   nil,
		"aggregated_score":               10 + inc.num%90,
		"wildfire_hits":                  0,
		"alerts_grouping_status":         "Enabled",
		"mitre_tactics_ids_and_names":    []string{"TA0002 - Execution"},
		"mitre_techniques_ids_and_names": []string{"T1059.001 - Command and Scripting Interpreter: PowerShell"},
		"alert_categories":               []string{"Malware"},
		"original_tags":                  []string{"DS:PANW/XDR Agent"},
		"tags":                           []string{"DS:PANW/XDR Agent"},
	}
}

// xsoarIncident renders an XSOAR incident object.
func (s *Sim) xsoarIncident(inc *incident) map[string]any {
	status := xsoarStatus(inc.status)
	closed := time.Time{}
	closeReason := ""
	if status == 2 || status == 3 {
		closed = inc.modified
		closeReason = "Resolved"
	}
	if s.o.Lean {
		return map[string]any{"id": s.idValue(inc.id), "status": status, "created": xsoarTime(inc.created),
			"modified": xsoarTime(inc.modified), "closed": xsoarTime(closed), "investigationId": inc.id}
	}
	sev := map[string]float64{"low": 1, "medium": 2, "high": 3, "critical": 4}[inc.severity]
	return map[string]any{
		"id":              s.idValue(inc.id),
		"name":            fmt.Sprintf("Suspicious activity %s", inc.id),
		"type":            "Unclassified",
		"status":          status,
		"severity":        sev,
		"created":         xsoarTime(inc.created),
		"modified":        xsoarTime(inc.modified),
		"occurred":        xsoarTime(inc.created),
		"closed":          xsoarTime(closed),
		"dueDate":         xsoarZero,
		"investigationId": inc.id,
		"owner":           "admin",
		"labels":          []any{map[string]any{"type": "Instance", "value": "admin"}},
		"attachment":      nil,
		"CustomFields":    map[string]any{"detectionsla": map[string]any{"runStatus": "idle"}},
		"closeReason":     closeReason,
		"closeNotes":      "",
		"details":         inc.description,
		"rawJSON":         "",
		"phase":           "",
		"sourceBrand":     "Manual",
		"sourceInstance":  "admin",
		"playbookId":      "",
		"version":         inc.version,
		"ShardID":         0,
	}
}

// xdrAlert renders one alert (legacy and newer fields, type drift under Options.Drift).
func (s *Sim) xdrAlert(inc *incident, alertID string, i int) map[string]any {
	ts := inc.created.Add(-time.Duration(i+1) * time.Second).UnixMilli()
	var whitelisted any = false
	featured := "NO"
	if s.o.Drift {
		whitelisted = "No"
		featured = "No"
	}
	return map[string]any{
		"alert_id":                           s.idValue(alertID),
		"external_id":                        "ext-" + alertID,
		"detection_timestamp":                ts,
		"local_insert_ts":                    ts + 500,
		"last_modified_ts":                   inc.modified.UnixMilli(),
		"source":                             "XDR Agent",
		"severity":                           []string{"low", "medium", "high", "critical"}[(int(inc.num)+i)%4],
		"name":                               "Suspicious PowerShell Command Line",
		"category":                           "Malware",
		"action":                             "DETECTED",
		"action_pretty":                      "Detected",
		"description":                        "PowerShell ran an encoded command",
		"host_ip":                            fmt.Sprintf("10.0.%d.%d", (i/250)%250, i%250+1),
		"host_name":                          "HOST-" + inc.id,
		"user_name":                          "CORP\\user" + inc.id,
		"endpoint_id":                        fmt.Sprintf("%032x", inc.num),
		"event_type":                         "Process Execution",
		"actor_process_image_name":           "powershell.exe",
		"actor_process_command_line":         "powershell.exe -enc SQBFAFgA",
		"actor_process_os_pid":               1000 + i,
		"actor_process_signature_status":     "SIGNED",
		"causality_actor_process_image_name": "explorer.exe",
		"is_whitelisted":                     whitelisted,
		"starred":                            false,
		"case_id":                            inc.num,
		"matching_status":                    "MATCHED",
		"alert_type":                         "Unclassified",
		"resolution_status":                  "STATUS_010_NEW",
		"resolution_comment":                 nil,
		"tags":                               "DS:PANW/XDR Agent",
		"original_tags":                      "DS:PANW/XDR Agent",
		"events_length":                      1,
		"is_pcap":                            false,
		"contains_featured_host":             featured,
		"contains_featured_ip":               featured,
		"contains_featured_user":             featured,
		"mitre_tactic_id_and_name":           "TA0002 - Execution",
		"mitre_technique_id_and_name":        "T1059.001 - Command and Scripting Interpreter: PowerShell",
	}
}

func (s *Sim) entryTime(inv *investigation, e entry) time.Time {
	return inv.created.Add(time.Duration(e.n) * 37 * time.Second)
}

// entryJSON renders one war-room entry in the XSOAR server shape.
func (s *Sim) entryJSON(inv *investigation, e entry) map[string]any {
	t := xsoarTime(s.entryTime(inv, e))
	id := fmt.Sprintf("%d@%s", e.n, inv.id)
	m := map[string]any{
		"id": id, "investigationId": inv.id, "created": t, "modified": t,
		"user": "", "dbotCreatedBy": "DBot", "brand": "none", "instance": "",
		"tags": []string{}, "tagsRaw": []string{}, "note": false, "pinned": false,
		"parentId": "", "parentContent": nil, "parentEntryTruncated": false, "taskId": "", "playbookId": "",
		"startDate": xsoarZero, "endingDate": xsoarZero, "retryTime": xsoarZero, "version": 1,
		"file": "", "fileID": "", "fileMetadata": nil, "contentsSize": 0, "category": "",
		"format": "", "contents": "", "entryTask": nil, "errorSource": "", "hasRole": false, "isTodo": false,
		"mirrored": false, "recurrent": false, "scheduled": false, "system": "", "times": 0, "timezoneOffset": 0,
		"reputations": nil, "reputationSize": 0, "roles": nil, "previousRoles": nil, "sortValues": nil, "ShardID": 0,
		"IndicatorTimeline": nil, "cronView": false,
	}
	switch e.kind {
	case kindNote:
		text := fmt.Sprintf("Analyst note %d on %s: checked the host, no lateral movement seen.", e.n, inv.id)
		m["type"], m["note"], m["format"], m["contents"], m["user"] = 1, true, "markdown", text, "analyst"
		m["category"], m["contentsSize"] = "chat", len(text)
	case kindCommand:
		text := fmt.Sprintf(`{"Endpoint":{"Hostname":"HOST-%s","IP":"10.0.0.%d","OS":"Windows"},"seq":%d}`, inv.inc.id, e.n%250, e.n)
		m["type"], m["format"], m["contents"], m["brand"] = 1, "json", text, "Cortex Core - IR"
		m["category"], m["contentsSize"] = "commandAndResults", len(text)
	case kindTask:
		text := fmt.Sprintf("Task %d done: enrichment finished", e.n)
		m["type"], m["format"], m["contents"], m["taskId"], m["playbookId"] = 1, "text", text, strconv.Itoa(e.n), "playbook0"
		m["category"], m["contentsSize"] = "playbookTaskResult", len(text)
	case kindError:
		text := "Command failed: endpoint isolated, agent unreachable"
		m["type"], m["format"], m["contents"], m["category"], m["contentsSize"] = 4, "text", text, "commandAndResults", len(text)
	case kindFile, kindImage:
		f := e.file
		typ := 3
		if e.kind == kindImage {
			typ = 7
		}
		m["type"], m["file"], m["fileID"], m["category"], m["user"] = typ, f.name, f.fileID, "artifact", "admin"
		m["fileMetadata"] = map[string]any{"info": f.mime, "isMediaFile": e.kind == kindImage,
			"sha256": s.fileSHA(f), "size": f.size, "type": f.mime}
	}
	return m
}

func (s *Sim) invObject(inv *investigation) map[string]any {
	return map[string]any{
		"id": inv.id, "name": fmt.Sprintf("Investigation %s", inv.id), "status": 0, "type": 0,
		"created": xsoarTime(inv.created), "modified": xsoarTime(inv.inc.modified), "closed": xsoarZero,
		"lastOpen": xsoarZero, "ShardID": 0, "category": "", "childs": nil, "creatingUserId": "admin",
		"dbotCreatedBy": "admin", "details": "", "entryUsers": []string{"admin", "analyst"}, "hasRole": false,
		"highPriority": false, "invContext": nil, "mirrorAutoClose": nil, "mirrorTypes": nil,
		"previousRoles": nil, "rawCategory": "", "reason": nil, "roles": nil, "runStatus": "completed",
		"slackMirrorAutoClose": false, "slackMirrorType": "", "sortValues": nil, "systems": nil,
		"tags": []string{}, "users": []string{"admin", "analyst"}, "version": inv.inc.version,
	}
}

// contextTree renders the context of an investigation.
func (s *Sim) contextTree(inv *investigation) map[string]any {
	var files []any
	for _, e := range inv.entries {
		if f := e.file; f != nil {
			files = append(files, map[string]any{"EntryID": f.entryID, "Name": f.name, "Size": f.size,
				"SHA256": s.fileSHA(f), "Type": f.mime, "Extension": f.name[strings.LastIndexByte(f.name, '.')+1:]})
		}
	}
	ctx := map[string]any{
		"Core":     map[string]any{"Endpoint": map[string]any{"hostname": "HOST-" + inv.inc.id, "ip": []string{"10.0.0.1"}}},
		"incident": map[string]any{"id": inv.inc.id, "investigation": inv.id},
	}
	if files != nil {
		ctx["File"] = files
	}
	r := s.rngFor("context", inv.id)
	for k := range inv.context {
		ctx[fmt.Sprintf("Key%d", k)] = map[string]any{
			"Value":  r.IntN(1 << 20),
			"Nested": map[string]any{"List": []any{"a", r.IntN(100), true, nil}, "Text": fmt.Sprintf("value %d of %s", k, inv.id)},
		}
	}
	return ctx
}
