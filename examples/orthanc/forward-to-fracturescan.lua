-- Forward every new CR or DX image to the fracturescan DICOM node (the "fracturescan" entry of
-- DicomModalities in orthanc.json). The node's results come back as SR and OT (secondary
-- capture) objects, which this rule does not forward, so nothing loops; the node also ignores
-- an image it has already received unchanged.
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags["Modality"]
  if modality == "CR" or modality == "DX" then
    SendToModality(instanceId, "fracturescan")
  end
end
