import Foundation

/// Duplicate keys in JSON objects. JSONSerialization keeps the last of them silently, so a
/// payload could carry a first value that nobody validated; the agent refuses such payloads.
enum JSONKeys {
    /// The first key that appears twice in one object of `json` (which must already have
    /// parsed as JSON), or nil.
    static func firstDuplicate(in json: [UInt8]) -> String? {
        var objects: [Set<String>?] = []  // one entry per open object or array (nil)
        var expectingKey = false
        var i = 0
        while i < json.count {
            switch json[i] {
            case UInt8(ascii: "{"):
                objects.append([])
                expectingKey = true
            case UInt8(ascii: "["):
                objects.append(nil)
                expectingKey = false
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = objects.popLast()
                expectingKey = false
            case UInt8(ascii: ","):
                expectingKey = objects.last.map { $0 != nil } ?? false
            case UInt8(ascii: ":"):
                expectingKey = false
            case UInt8(ascii: "\""):
                var j = i + 1
                while j < json.count && json[j] != UInt8(ascii: "\"") { j += json[j] == UInt8(ascii: "\\") ? 2 : 1 }
                if expectingKey, var keys = objects.last ?? nil {
                    // Compared unescaped: "a" and "\u0061" are the same key.
                    let raw = Array(json[i...min(j, json.count - 1)])
                    let key = (try? JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed])) as? String
                        ?? String(decoding: raw, as: UTF8.self)
                    guard keys.insert(key).inserted else { return key }
                    objects[objects.count - 1] = keys
                }
                i = j
            default:
                break
            }
            i += 1
        }
        return nil
    }
}
