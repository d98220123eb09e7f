/// The children of one supervisor, in start order, with an index by id.
///
/// Appending, looking up by id and removing are O(1) or O(log n) (a removed child leaves an
/// empty slot, found by binary search on its start sequence number and closed by a later
/// compaction, amortised O(1)); iteration is in start order either way, and a child's position
/// (for `restForOne`) is found the same way. So a dynamic supervisor with a million children
/// pays per child, not per sibling.
struct ChildList {
    struct Slot {
        let sequence: Int
        var record: ChildRecord?
    }

    /// Start order; a removed child's slot is empty until the next compaction.
    private(set) var slots: [Slot] = []
    private var byID: [String: ChildRecord] = [:]
    private var nextSequence = 0
    private var emptySlots = 0
    /// How many children are supervisors (the rest are workers).
    private(set) var supervisorCount = 0
    /// How many children are running or stopping (and how many significant ones are alive),
    /// kept up to date by the records themselves (see `ChildRecord.state`).
    let activeCount = ActiveChildCount()

    /// The number of children.
    var count: Int { byID.count }

    /// The child with `id`.
    subscript(id: String) -> ChildRecord? { byID[id] }

    /// The children in start order.
    var live: [ChildRecord] { slots.compactMap(\.record) }

    mutating func append(_ record: ChildRecord) {
        record.sequence = nextSequence
        slots.append(Slot(sequence: nextSequence, record: record))
        nextSequence += 1
        byID[record.id] = record
        if record.spec.kind.isSupervisor { supervisorCount += 1 }
        record.activeCount = activeCount
        if record.isActive { activeCount.value += 1 }
        if record.isSignificant && (record.isActive || record.state == .restarting) { activeCount.significantAlive += 1 }
    }

    /// Forgets `record`. The caller holds a reference of its own, so nothing is deallocated
    /// inside this access.
    mutating func remove(_ record: ChildRecord) {
        guard byID[record.id] === record, let index = index(of: record) else { return }
        byID[record.id] = nil
        slots[index].record = nil
        if record.spec.kind.isSupervisor { supervisorCount -= 1 }
        if record.isActive { activeCount.value -= 1 }
        if record.isSignificant && (record.isActive || record.state == .restarting) { activeCount.significantAlive -= 1 }
        record.activeCount = nil
        emptySlots += 1
        if emptySlots >= 64 && emptySlots * 2 >= slots.count {
            slots.removeAll { $0.record == nil }   // empty slots hold nothing to release
            emptySlots = 0
        }
    }

    /// Where `record` stands in ``slots`` (binary search on its start sequence number).
    func index(of record: ChildRecord) -> Int? {
        var low = 0
        var high = slots.count
        while low < high {
            let middle = (low + high) / 2
            if slots[middle].sequence < record.sequence { low = middle + 1 } else { high = middle }
        }
        return low < slots.count && slots[low].record === record ? low : nil
    }
}

/// Counts of a supervisor's children kept by its records, which update them when their state
/// changes: so `countChildren()` and the `allSignificant` check are O(1).
final class ActiveChildCount {
    /// Children running or stopping.
    var value = 0
    /// Significant children running, stopping or waiting for their restart.
    var significantAlive = 0
}
